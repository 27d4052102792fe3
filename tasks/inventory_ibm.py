"""Inventory reads of an IBM Cloud account through the IBM SDKs: Key Protect root keys and
their registrations, the byok metadata of the images in COS, SoftLayer image templates and
VPC images. What the credentials may not read becomes a `no-access` finding, never a crash."""

from __future__ import annotations

from typing import Any

from ibm_botocore.exceptions import ClientError
from ibm_cloud_sdk_core import ApiException
from ibm_vpc.vpc_v1 import ImagesPager
from prefect import task
from SoftLayer import SoftLayerAPIError

from blocks.ibm import IBMCloudCredentials
from byok.ibm_dek import META_KEY_VERSION, META_ROOT_KEY
from byok.inventory.ibm import CosImage, IbmAccountSnapshot
from byok.inventory.models import Finding, Kind
from byok.inventory.request import IbmAccountScope
from byok.inventory.said import account_note
from clients.ibm import IBMClients
from clients.softlayer_templates import TEMPLATE_MASK
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES, is_transient

REFUSED = frozenset({401, 403, 404})  # not allowed, or not there


@task(name="Read the IBM Cloud account", **STEP_RETRIES, **IN_MEMORY)
def read_ibm_account(
    credentials: IBMCloudCredentials, scope: IbmAccountScope
) -> IbmAccountSnapshot:
    """Root keys (with registrations) of the scope's Key Protect instances, encrypted images
    in its buckets, image templates and VPC images."""
    clients = IBMClients.of(credentials)
    snapshot = IbmAccountSnapshot(account_id=credentials.account_id, region=credentials.region)
    for instance in scope.key_protect_instances:
        _guarded(
            snapshot, f"key-protect:{instance}", Kind.IBM_ROOT_KEY, _read_keys, clients, instance
        )
    _guarded(snapshot, "cos", Kind.IBM_IMAGE, _read_cos, clients, scope)
    _guarded(
        snapshot, "softlayer:image-templates", Kind.IBM_IMAGE_TEMPLATE, _read_templates, clients
    )
    _guarded(snapshot, "vpc:images", Kind.IBM_VPC_IMAGE, _read_vpc_images, clients)
    report(f"IBM Cloud account {snapshot.account_id}", "read", note=account_note(snapshot))
    return snapshot


def _guarded(snapshot: IbmAccountSnapshot, what: str, kind: Kind, read: Any, *args: Any) -> None:
    """Run one read into the snapshot; a refusal becomes a no-access finding for `what`."""
    try:
        read(snapshot, *args)
    except (ApiException, SoftLayerAPIError, ClientError) as exc:
        if is_transient(exc) or _status(exc) not in REFUSED:
            raise
        snapshot.unreadable.append(
            Finding(
                resource_id=what,
                kind=kind,
                scope=snapshot.account_id,
                region=snapshot.region,
                access=False,
                note=f"not readable with these credentials, or not there ({_status(exc)})",
            )
        )


def _status(exc: Exception) -> int | None:
    if isinstance(exc, ApiException):
        return exc.status_code
    if isinstance(exc, SoftLayerAPIError):
        return exc.faultCode if isinstance(exc.faultCode, int) else None
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _read_keys(snapshot: IbmAccountSnapshot, clients: IBMClients, instance: str) -> None:
    kp = clients.key_protect(instance)
    for key in kp.list_keys():
        if key.get("extractable") or key.get("deleted"):
            continue  # standard keys wrap nothing
        snapshot.root_keys.append(
            {
                **key,
                "instanceCrn": key["crn"].rsplit(":key:", 1)[0],
                "rotationPolicy": kp.rotation_policy(key["id"]),
            }
        )
        snapshot.registrations[key["id"]] = kp.registrations(key["id"])


def _read_cos(snapshot: IbmAccountSnapshot, clients: IBMClients, scope: IbmAccountScope) -> None:
    s3 = clients.cos(scope.cos_instance_id)
    buckets = scope.buckets or [b["Name"] for b in s3.list_buckets().get("Buckets") or []]
    for bucket in buckets:
        where = f"cos://{snapshot.region}/{bucket}"
        _guarded(snapshot, where, Kind.IBM_IMAGE, _read_bucket, s3, bucket)


def _read_bucket(snapshot: IbmAccountSnapshot, s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents") or []:
            meta = s3.head_object(Bucket=bucket, Key=item["Key"]).get("Metadata") or {}
            if meta.get(META_ROOT_KEY):
                snapshot.cos_images.append(
                    CosImage(
                        bucket=bucket,
                        key=item["Key"],
                        root_key_crn=meta[META_ROOT_KEY],
                        key_version=meta.get(META_KEY_VERSION) or None,
                    )
                )


def _read_templates(snapshot: IbmAccountSnapshot, clients: IBMClients) -> None:
    found = clients.softlayer().call(
        "SoftLayer_Account", "getBlockDeviceTemplateGroups", mask=TEMPLATE_MASK
    )
    snapshot.templates.extend(found or [])


def _read_vpc_images(snapshot: IbmAccountSnapshot, clients: IBMClients) -> None:
    snapshot.vpc_images.extend(ImagesPager(client=clients.vpc(), visibility="private").get_all())
