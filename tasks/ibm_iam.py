"""IAM steps: the `server-protect → kms` Reader authorization, and the service ID the import
authenticates as (access policies on the bucket and Key Protect, and a single-use API key
whose value only ever lives in memory)."""

from __future__ import annotations

from typing import Any

from ibm_cloud_sdk_core import ApiException
from prefect import get_run_logger, task
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import ImportIdentity
from clients.ibm import IBMClients
from tasks.ibm_key_protect import SECRET_TASK
from tasks.retry import STEP_RETRIES

ROLE = "crn:v1:bluemix:public:iam::::serviceRole:"
READ_ROLES = frozenset({"Reader", "ReaderPlus", "Writer", "Manager"})


def _attributes(**values: str) -> list[dict[str, Any]]:
    return [{"attributes": [{"name": k, "value": v} for k, v in values.items()]}]


def _values(items: list[dict[str, Any]]) -> dict[str, str]:
    first = items[0] if items else {}
    return {a["name"]: a["value"] for a in first.get("attributes") or []}


def _grants(policy: dict[str, Any], resource: dict[str, str]) -> bool:
    """Whether `policy` gives a read role on every attribute it names of `resource`."""
    roles = {str(r.get("role_id", "")).rsplit(":", 1)[-1] for r in policy.get("roles") or []}
    wanted = _values(policy.get("resources") or [])
    return bool(roles & READ_ROLES) and all(resource.get(k) == v for k, v in wanted.items())


def _ensure_policy(
    clients: IBMClients,
    kind: str,
    subject: dict[str, str],
    resource: dict[str, str],
    query: dict[str, str],
) -> str:
    """An existing policy for `subject` covering `resource` with Reader, or a new one."""
    policies = clients.policies()
    account = clients.block.account_id

    def existing() -> str | None:
        found = policies.list_policies(account_id=account, type=kind, **query).get_result()
        return next(
            (
                p["id"]
                for p in found.get("policies") or []
                if _values(p.get("subjects") or []).items() >= subject.items()
                and _grants(p, resource)
            ),
            None,
        )

    policy_id = existing()
    if policy_id:
        return policy_id
    try:
        created = policies.create_policy(
            type=kind,
            subjects=_attributes(**subject),
            roles=[{"role_id": ROLE + "Reader"}],
            resources=_attributes(**resource),
            description="byok: encrypted image import",
        ).get_result()
    except ApiException as exc:
        if exc.status_code == 409 and (policy_id := existing()):
            return policy_id
        raise
    return str(created["id"])


@task(name="Authorize Cloud Block Storage to read Key Protect", **STEP_RETRIES)
def ensure_kms_authorization(credentials: IBMCloudCredentials, instance_id: str) -> str:
    """The `server-protect → kms` Reader authorization on the instance (get or create)."""
    account = credentials.account_id
    policy_id = _ensure_policy(
        IBMClients(credentials),
        "authorization",
        {"accountId": account, "serviceName": "server-protect"},
        {"accountId": account, "serviceName": "kms", "serviceInstance": instance_id},
        {},
    )
    get_run_logger().info("Authorization server-protect -> kms Reader: policy %s", policy_id)
    return policy_id


def find_service_id(clients: IBMClients, name: str) -> dict[str, Any] | None:
    """The account's service ID called `name`, or None."""
    found = (
        clients.identity()
        .list_service_ids(account_id=clients.block.account_id, name=name)
        .get_result()
    )
    return next((s for s in found.get("serviceids") or [] if s["name"] == name), None)


@task(name="Create the import service ID, its policies and API key", **STEP_RETRIES, **SECRET_TASK)
def create_import_identity(
    credentials: IBMCloudCredentials,
    name: str,
    cos_instance_id: str,
    bucket: str,
    kms_instance_id: str,
    key_name: str,
) -> tuple[ImportIdentity, SecretStr]:
    """Service ID `name` (get or create) with Reader on the bucket and on Key Protect, and a
    new API key `key_name` (its value returned once, kept in memory only)."""
    clients = IBMClients(credentials)
    account = credentials.account_id
    service_id = find_service_id(clients, name) or (
        clients.identity()
        .create_service_id(
            account_id=account, name=name, description="byok: imports encrypted images"
        )
        .get_result()
    )
    subject = {"iam_id": service_id["iam_id"]}
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
        _ensure_policy(clients, "access", subject, scope, {"iam_id": service_id["iam_id"]})
        for scope in scopes
    ]
    key = (
        clients.identity()
        .create_api_key(
            name=key_name,
            iam_id=service_id["iam_id"],
            account_id=account,
            description="byok: single-use key of one image import",
        )
        .get_result()
    )
    get_run_logger().info(
        "Service ID %s with policies %s and a new API key %s",
        service_id["id"],
        ", ".join(policy_ids),
        key["id"],
    )
    identity = ImportIdentity(
        id=service_id["id"],
        iam_id=service_id["iam_id"],
        name=name,
        api_key_id=key["id"],
        policy_ids=policy_ids,
    )
    return identity, SecretStr(key["apikey"])


@task(name="Delete the import API keys", **STEP_RETRIES)
def retire_import_api_keys(credentials: IBMCloudCredentials, name: str, key_name: str) -> int:
    """Delete the service ID's API keys called `key_name` (used once, by the import)."""
    clients = IBMClients(credentials)
    service_id = find_service_id(clients, name)
    if service_id is None:
        return 0
    identity = clients.identity()
    keys = identity.list_api_keys(
        account_id=credentials.account_id, iam_id=service_id["iam_id"]
    ).get_result()
    stale = [k["id"] for k in keys.get("apikeys") or [] if k["name"] == key_name]
    for key_id in stale:
        identity.delete_api_key(id=key_id)
    if stale:
        get_run_logger().info("Deleted %d import API key(s) of %s", len(stale), name)
    return len(stale)
