"""IAM policies the IBM steps grant (an authorization between services, or an access policy
of a service ID): an existing policy that gives Reader on the resource, or a new one, made
exactly once."""

from __future__ import annotations

from typing import Any

from ibm_cloud_sdk_core import ApiException

from byok.ibm_writes import create_once
from clients.ibm import IBMClients

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


def find_policy(
    clients: IBMClients,
    kind: str,
    subject: dict[str, str],
    resource: dict[str, str],
    query: dict[str, str],
) -> str | None:
    """The id of a policy for `subject` covering `resource` with Reader, or None."""
    found = (
        clients.policies()
        .list_policies(account_id=clients.block.account_id, type=kind, **query)
        .get_result()
    )
    return next(
        (
            p["id"]
            for p in found.get("policies") or []
            if _values(p.get("subjects") or []).items() >= subject.items() and _grants(p, resource)
        ),
        None,
    )


def ensure_policy(
    clients: IBMClients,
    kind: str,
    subject: dict[str, str],
    resource: dict[str, str],
    query: dict[str, str],
) -> str:
    """An existing policy for `subject` covering `resource` with Reader, or a new one."""
    policies = clients.policies()

    def existing() -> str | None:
        return find_policy(clients, kind, subject, resource, query)

    policy_id = existing()
    if policy_id:
        return policy_id

    def create() -> str:
        try:
            created = policies.create_policy(
                type=kind,
                subjects=_attributes(**subject),
                roles=[{"role_id": ROLE + "Reader"}],
                resources=_attributes(**resource),
                description="byok: encrypted image import",
            ).get_result()
        except ApiException as exc:
            if exc.status_code == 409 and (found := existing()):
                return found
            raise
        return str(created["id"])

    return create_once(create, existing, f"{kind} policy")
