"""IAM steps: the `server-protect → kms` Reader authorization, and the service ID the import
authenticates as (access policies on the bucket and Key Protect, and a single-use API key
whose value only ever lives in memory)."""

from __future__ import annotations

import uuid
from typing import Any

from ibm_cloud_sdk_core import ApiException
from prefect import get_run_logger, task
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import ImportIdentity
from byok.ibm_writes import create_once
from clients.ibm import IBMClients
from clients.ibm_policies import ensure_policy
from clients.softlayer_templates import find_template
from tasks.in_memory import IN_MEMORY
from tasks.retry import STEP_RETRIES


@task(name="Authorize Cloud Block Storage to read Key Protect", **STEP_RETRIES)
def ensure_kms_authorization(credentials: IBMCloudCredentials, instance_id: str) -> str:
    """The `server-protect → kms` Reader authorization on the instance (get or create)."""
    account = credentials.account_id
    policy_id = ensure_policy(
        IBMClients.of(credentials),
        "authorization",
        {"accountId": account, "serviceName": "server-protect"},
        {"accountId": account, "serviceName": "kms", "serviceInstance": instance_id},
        {},
    )
    get_run_logger().info("Authorization server-protect -> kms Reader: policy %s", policy_id)
    return policy_id


def service_ids_named(clients: IBMClients, name: str) -> list[dict[str, Any]]:
    """The account's service IDs called `name` (IAM allows several)."""
    found = (
        clients.identity()
        .list_service_ids(account_id=clients.block.account_id, name=name)
        .get_result()
    )
    return [s for s in found.get("serviceids") or [] if s["name"] == name]


def _identity(service_id: dict[str, Any]) -> ImportIdentity:
    return ImportIdentity(id=service_id["id"], iam_id=service_id["iam_id"], name=service_id["name"])


@task(name="Ensure the import service ID", **STEP_RETRIES)
def ensure_import_service_id(credentials: IBMCloudCredentials, name: str) -> ImportIdentity:
    """The service ID `name` (the first of that name, or a new one); after a lost answer the
    new one is found by the nonce its description carries, never by name alone."""
    clients = IBMClients.of(credentials)
    existing = service_ids_named(clients, name)
    if existing:
        return _identity(existing[0])
    description = f"byok: imports encrypted images ({uuid.uuid4().hex})"

    def ours() -> dict[str, Any] | None:
        found = service_ids_named(clients, name)
        return next((s for s in found if s.get("description") == description), None)

    created = create_once(
        lambda: (
            clients.identity()
            .create_service_id(
                account_id=credentials.account_id, name=name, description=description
            )
            .get_result()
        ),
        ours,
        f"service ID {name}",
    )
    get_run_logger().info("Created service ID %s (%s)", name, created["id"])
    return _identity(created)


def _api_keys(clients: IBMClients, iam_id: str, name: str) -> list[dict[str, Any]]:
    keys = (
        clients.identity()
        .list_api_keys(account_id=clients.block.account_id, iam_id=iam_id)
        .get_result()
    )
    return [k for k in keys.get("apikeys") or [] if k["iam_id"] == iam_id and k["name"] == name]


def _delete_api_key(clients: IBMClients, key_id: str) -> None:
    """Delete an API key; a 404 (a re-sent DELETE whose first answer was lost) is success."""
    try:
        clients.identity().delete_api_key(id=key_id)
    except ApiException as exc:
        if exc.status_code != 404:
            raise


@task(name="Grant the import service ID and create its API key", **STEP_RETRIES, **IN_MEMORY)
def create_import_api_key(
    credentials: IBMCloudCredentials,
    identity: ImportIdentity,
    cos_instance_id: str,
    bucket: str,
    kms_instance_id: str,
    key_name: str,
) -> SecretStr:
    """Reader on the bucket and on Key Protect for the service ID, and a new API key
    `key_name` (its value returned once, kept in memory only). Keys of that name left by a
    crashed run are deleted first; a key whose creation answer was lost (its value unknown,
    so useless) is deleted before creating another."""
    clients = IBMClients.of(credentials)
    account = credentials.account_id
    subject = {"iam_id": identity.iam_id}
    scopes = [
        {
            "accountId": account,
            "serviceName": "cloud-object-storage",
            "serviceInstance": cos_instance_id,
            "resourceType": "bucket",
            "resource": bucket,
        },
        {"accountId": account, "serviceName": "kms", "serviceInstance": kms_instance_id},
    ]
    policy_ids = [
        ensure_policy(clients, "access", subject, scope, {"iam_id": identity.iam_id})
        for scope in scopes
    ]

    def discard() -> None:
        """Delete the keys of that name: left by a crashed run, or created by a request whose
        answer was lost (their value is unknown, so they can never be used)."""
        for stale in _api_keys(clients, identity.iam_id, key_name):
            _delete_api_key(clients, stale["id"])

    discard()
    key = create_once(
        lambda: (
            clients.identity()
            .create_api_key(
                name=key_name,
                iam_id=identity.iam_id,
                account_id=account,
                description="byok: single-use key of one image import",
            )
            .get_result()
        ),
        discard,
        f"API key {key_name}",
    )
    get_run_logger().info(
        "Service ID %s has policies %s and a new API key %s",
        identity.id,
        ", ".join(policy_ids),
        key["id"],
    )
    return SecretStr(key["apikey"])


@task(name="Delete the import API key", **STEP_RETRIES)
def retire_import_api_keys(
    credentials: IBMCloudCredentials,
    iam_id: str | None,
    name: str,
    key_name: str,
    image_name: str,
) -> int:
    """Delete the API keys called `key_name` of the run's service ID (`iam_id`, found by id)
    and of any service ID called `name` (keys left by an earlier, crashed run); kept while
    the import of `image_name` still runs (it reads the image with the key)."""
    clients = IBMClients.of(credentials)
    log = get_run_logger()
    template = find_template(clients.softlayer(), image_name)
    if template is not None and template.busy:
        log.warning(
            "The import of %s still runs and reads the image with its API key %s: kept; a "
            "re-run of this request deletes it",
            image_name,
            key_name,
        )
        return 0
    iam_ids = {s["iam_id"] for s in service_ids_named(clients, name)}
    if iam_id is not None:
        iam_ids.add(iam_id)
    stale = [k["id"] for i in sorted(iam_ids) for k in _api_keys(clients, i, key_name)]
    for key_id in stale:
        _delete_api_key(clients, key_id)
    if stale:
        log.info("Deleted %d import API key(s) called %s", len(stale), key_name)
    return len(stale)
