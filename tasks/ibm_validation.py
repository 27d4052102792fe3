"""Checking an image request before anything is written: names, the Key Protect region, the
root key, a provided DEK, the bucket, the source image, and what a previous run left."""

from __future__ import annotations

from typing import Any

import SoftLayer
from prefect import task

from blocks.ibm import IBMCloudCredentials
from blocks.secrets import decode_root_material, load_secret
from byok.ibm_dek_file import read_sidecar
from byok.ibm_models import IbmImageRequest, ImagePlan, WrappedDek
from byok.ibm_validation import (
    check_bucket_location,
    check_dek_file,
    check_ibm_name,
    check_listed,
    check_source_vhd,
    crn_region,
    decode_dek,
    local_vhd_info,
)
from byok.validation import InvalidRequest
from byok.vhd import keyhash
from clients.ibm import IBMClients
from clients.ibm_cos_objects import bucket_location, encrypted_object, head, read_vhd_info
from clients.key_protect_keys import find_root_key
from clients.softlayer_templates import TEMPLATES, check_source_template, find_template
from tasks.in_memory import IN_MEMORY


def check_names(request: IbmImageRequest) -> None:
    """Every name the request gives."""
    check_ibm_name("guid", "key_protect_instance_id", request.key_protect_instance_id)
    check_ibm_name("guid", "cos_instance_id", request.cos_instance_id)
    check_ibm_name("bucket", "bucket", request.bucket)
    check_ibm_name("object", "encrypted_object", request.object_key)
    if request.source_object is not None:
        check_ibm_name("object", "source_object", request.source_object)
    check_ibm_name("template", "image_name", request.image_name)
    check_ibm_name("service_id", "service_id_name", request.service_id_name)
    if not request.root_key.startswith("crn:"):
        check_ibm_name("key", "root_key", request.root_key)
    if request.order is not None:
        check_ibm_name("hostname", "order.hostname", request.order.hostname)
        check_ibm_name("domain", "order.domain", request.order.domain)


@task(name="Validate the request", **IN_MEMORY)
def validate_image_request(credentials: IBMCloudCredentials, request: IbmImageRequest) -> ImagePlan:
    """Read-only checks, so that a bad request fails before any write; returns what exists."""
    check_names(request)
    region = credentials.region
    key_region = (
        crn_region("root_key", request.root_key) if request.root_key.startswith("crn:") else region
    )
    if key_region != region:
        raise InvalidRequest(
            "root_key",
            request.root_key,
            f"region mismatch: the key is in {key_region}, the credentials "
            f"(Key Protect endpoint and bucket) in {region}",
        )
    clients = IBMClients.of(credentials)
    softlayer = clients.softlayer()
    check_softlayer_choices(softlayer, request)
    template = find_template(softlayer, request.image_name)
    if template is not None and (not template.encrypted or template.status == "IMPORT_FAILED"):
        raise InvalidRequest(
            "image_name",
            request.image_name,
            f"template {template.id} already has this name (status {template.status}, "
            f"{'encrypted' if template.encrypted else 'unencrypted'}); delete it or choose "
            "another name",
        )
    key = find_root_key(clients.key_protect(request.key_protect_instance_id), request.root_key)
    if key is None and not request.create_root_key:
        raise InvalidRequest("root_key", request.root_key, "no such root key (create_root_key off)")
    if key is None and request.root_key_material_block:
        decode_root_material(request.root_key_material_block)
    own_dek = None
    if request.dek_secret_block:
        own_dek = decode_dek(
            "dek_secret_block", load_secret("dek_secret_block", request.dek_secret_block)
        )
    s3 = clients.cos(request.cos_instance_id)
    location = bucket_location(s3, request.bucket)
    if location == "" and not request.create_bucket:
        raise InvalidRequest("bucket", request.bucket, "no such bucket (create_bucket off)")
    if location != "":
        check_bucket_location("bucket", request.bucket, location, region)
    existing = encrypted_object(s3, request.bucket, request.object_key) if location else None
    if template is None and existing is None:
        if request.source_template_id is not None:
            check_source_template(softlayer, request.source_template_id)
        elif request.source_file is not None:
            _, info = local_vhd_info("source_file", request.source_file)
            check_source_vhd("source_file", request.source_file, info)
        else:
            source = head(s3, request.bucket, str(request.source_object)) if location else None
            if source is None:
                raise InvalidRequest(
                    "source_object", request.source_object, f"no such object in {request.bucket}"
                )
            size = int(source["ContentLength"])
            info = read_vhd_info(
                s3, request.bucket, str(request.source_object), size, "source_object"
            )
            check_source_vhd("source_object", str(request.source_object), info)
    pending = None
    if request.dek_file is not None:
        if template is None and existing is None and own_dek is None:
            pending = pending_dek(request.dek_file, key)
        recorded = existing or pending
        expected = recorded.keyhash if recorded is not None else None
        if own_dek is not None:
            expected = keyhash(own_dek).hex()
        check_dek_file(request.dek_file, expected, template is None)
    return ImagePlan(
        bucket_exists=location != "",
        template=template,
        encrypted_object=existing,
        pending_dek=pending,
    )


def pending_dek(path: str, root_key: dict[str, Any] | None) -> WrappedDek | None:
    """The DEK a crashed run wrote to the key file (its sidecar), usable when the root key
    that wrapped it is the request's."""
    record = read_sidecar(path)
    if record is None or (root_key is not None and record.root_key_crn == root_key["crn"]):
        return record
    raise InvalidRequest(
        "dek_file",
        path,
        f"its sidecar records a DEK wrapped by {record.root_key_crn}, not by the request's root "
        "key; remove both files or use that root key",
    )


def check_softlayer_choices(softlayer: SoftLayer.BaseClient, request: IbmImageRequest) -> None:
    """The OS reference code and the order's datacenter against what SoftLayer lists."""
    codes = softlayer.call(TEMPLATES, "getVhdImportSoftwareDescriptions", mask="referenceCode")
    check_listed(
        "os_reference_code",
        request.os_reference_code,
        {str(c.get("referenceCode")) for c in codes or []},
        "getVhdImportSoftwareDescriptions",
    )
    if request.order is not None:
        centers = softlayer.call("SoftLayer_Location", "getDatacenters", mask="name")
        check_listed(
            "order.datacenter",
            request.order.datacenter,
            {str(c.get("name")) for c in centers or []},
            "SoftLayer_Location::getDatacenters",
        )
