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
from byok.ibm_models import ImportIdentity, import_scopes, kms_authorization, policy_name
from byok.ibm_writes import create_once
from clients.ibm import IBMClients
from clients.ibm_policies import ensure_policy, find_policy
from clients.ibm_service_ids import api_keys_named, service_ids_named
from clients.softlayer_templates import find_template
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


def granted(
    clients: IBMClients,
    kind: str,
    subject: dict[str, str],
    scope: dict[str, str],
    query: dict[str, str],
    name: str,
) -> str:
    """A Reader policy of `subject` on `scope`, found or created; reported as `name`."""
    found = find_policy(clients, kind, subject, scope, query)
    policy_id = found or ensure_policy(clients, kind, subject, scope, query)
    report(name, None if found else "grant", note=f"policy {policy_id}")
    return policy_id


@task(name="Authorize Cloud Block Storage to read Key Protect", **STEP_RETRIES)
def ensure_kms_authorization(credentials: IBMCloudCredentials, instance_id: str) -> str:
    """The `server-protect → kms` Reader authorization on the instance (get or create)."""
    subject, scope = kms_authorization(credentials.account_id, instance_id)
    name = policy_name("server-protect", scope)
    return granted(IBMClients.of(credentials), "authorization", subject, scope, {}, name)


def _identity(service_id: dict[str, Any]) -> ImportIdentity:
    return ImportIdentity(id=service_id["id"], iam_id=service_id["iam_id"], name=service_id["name"])


@task(name="Ensure the import service ID", **STEP_RETRIES)
def ensure_import_service_id(credentials: IBMCloudCredentials, name: str) -> ImportIdentity:
    """The service ID `name` (the first of that name, or a new one); after a lost answer the
    new one is found by the nonce its description carries, never by name alone."""
    clients = IBMClients.of(credentials)
    existing = service_ids_named(clients, name)
    if existing:
        report(f"service ID {name}", None, note=existing[0]["id"])
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
    report(f"service ID {name}", "create", note=created["id"])
    return _identity(created)


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
    subject, query = {"iam_id": identity.iam_id}, {"iam_id": identity.iam_id}
    for scope in import_scopes(account, cos_instance_id, bucket, kms_instance_id):
        name = policy_name(f"service ID {identity.name}", scope)
        granted(clients, "access", subject, scope, query, name)

    def discard() -> None:
        """Delete the keys of that name: left by a crashed run, or created by a request whose
        answer was lost (their value is unknown, so they can never be used)."""
        for stale in api_keys_named(clients, identity.iam_id, key_name):
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
    report(f"API key {key_name}", "create", note="single-use: deleted once the import ends")
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
        report(f"API key {key_name}", None, note="kept while the import reads the image")
        return 0
    iam_ids = {s["iam_id"] for s in service_ids_named(clients, name)}
    if iam_id is not None:
        iam_ids.add(iam_id)
    stale = [k["id"] for i in sorted(iam_ids) for k in api_keys_named(clients, i, key_name)]
    for key_id in stale:
        _delete_api_key(clients, key_id)
    report(
        f"API key {key_name}",
        "delete" if stale else None,
        note=f"{len(stale)} key(s)" if stale else "none left",
    )
    return len(stale)
