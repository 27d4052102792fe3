"""Microsoft.Authorization: built-in role definitions and role assignments at any scope."""

from __future__ import annotations

import time
import uuid
from typing import Any

from emulator.http import HttpError
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.authorization.roles import (
    BUILT_IN_ROLES,
    ROLE_DEFINITION_TYPE,
    allowed,
    in_scope,
    role_by_definition_id,
)

ROLE_ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"


class RoleAssignmentHooks(TypeHooks):
    """Checks the role and the principal; the grant takes hold after the `access-grant`
    delayed effect."""

    def validate(self, ctx: PutContext) -> None:
        props = ctx.body.get("properties") or {}
        role_id, principal_id = props.get("roleDefinitionId"), props.get("principalId")
        if not role_id or role_by_definition_id(role_id) is None:
            raise HttpError(
                400,
                "RoleDefinitionDoesNotExist",
                f"The specified role definition with ID '{role_id}' does not exist.",
            )
        principal = ctx.arm.entra.principals.get(str(principal_id))
        tenant = ctx.arm.subscription(ctx.rid.subscription).tenant_id
        if principal is None or not principal.visible or principal.tenant_id != tenant:
            raise HttpError(
                400,
                "PrincipalNotFound",
                f"Principal {principal_id} does not exist in the directory "
                f"{tenant}. Check that you have the correct principal ID. "
                "If you are creating this principal and then immediately assigning a role, "
                "this error might be related to a replication delay.",
            )
        if ctx.existing:
            raise HttpError(
                409,
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            )
        wanted = role_by_definition_id(role_id)
        for other in assignments_at(ctx.arm, ctx.rid.scope, exact=True):
            op = other["properties"]
            if (
                op["principalId"] == principal_id
                and role_by_definition_id(op["roleDefinitionId"]) == wanted
            ):
                raise HttpError(409, "RoleAssignmentExists", "The role assignment already exists.")

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        props = resource["properties"]
        props["scope"] = ctx.rid.scope
        props.setdefault("principalType", "ServicePrincipal")
        resource["_effective_at"] = ctx.arm.faults.effect_time("access-grant")


def assignments_at(arm: ArmModel, scope: str, exact: bool = False) -> list[dict[str, Any]]:
    """Role assignments at `scope` (and, unless `exact`, at the scopes above it)."""
    scope_l = scope.lower().rstrip("/")
    found = []
    with arm.lock:
        for resource in arm.resources.values():
            if resource["type"] != ROLE_ASSIGNMENT_TYPE:
                continue
            at = resource["properties"]["scope"].lower().rstrip("/")
            if at == scope_l or (not exact and scope_l.startswith(at + "/")):
                found.append(resource)
    return found


def principal_assignments(arm: ArmModel, principal_id: str) -> list[dict[str, Any]]:
    """The principal's role assignments, at any scope, that have taken effect."""
    now = time.monotonic()
    with arm.lock:
        return [
            r
            for r in arm.resources.values()
            if r["type"] == ROLE_ASSIGNMENT_TYPE
            and r["properties"]["principalId"] == principal_id
            and r["_effective_at"] <= now
        ]


def effective_assignments(arm: ArmModel, scope: str, principal_id: str) -> list[dict[str, Any]]:
    """The principal's role assignments at `scope` and above that have taken effect."""
    return [
        a
        for a in principal_assignments(arm, principal_id)
        if in_scope(a["properties"]["scope"], scope)
    ]


def holds_role_within(arm: ArmModel, principal_id: str, scope: str) -> bool:
    """Whether the principal holds a role at `scope`, above it or anywhere below it."""
    return any(
        in_scope(a["properties"]["scope"], scope) or in_scope(scope, a["properties"]["scope"])
        for a in principal_assignments(arm, principal_id)
    )


def readable(
    arm: ArmModel, principal_id: str, resources: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The resources the principal may read (all of them unless authorization is enforced):
    what ARM's lists and Resource Graph answer
    (https://learn.microsoft.com/azure/governance/resource-graph/overview#permissions-in-
    azure-resource-graph: without read access to a resource, it is not returned)."""
    if not arm.enforce_authorization:
        return resources
    mine = principal_assignments(arm, principal_id)
    return [
        r
        for r in resources
        if allowed(mine, principal_id, ids.resource_read_action(r["type"]), r["id"])
    ]


def allowed_key_operations(arm: ArmModel, scope: str, principal_id: str) -> set[str]:
    """The key operations the principal's effective role assignments allow at `scope`."""
    ops: set[str] = set()
    for assignment in effective_assignments(arm, scope, principal_id):
        role = role_by_definition_id(assignment["properties"]["roleDefinitionId"])
        if role:
            ops |= role.key_operations
    return ops


def principal_allowed(arm: ArmModel, principal_id: str, action: str, scope: str) -> bool:
    """Whether the principal's effective role assignments allow a control-plane action."""
    return allowed(effective_assignments(arm, scope, principal_id), principal_id, action, scope)


def grant(arm: ArmModel, principal_id: str, role_name: str, scope: str) -> dict[str, Any]:
    """Assign a built-in role by name at `scope`, in effect at once and without any check
    (test and demo set-up: the emulator's own administrator hand)."""
    role = next(r for r in BUILT_IN_ROLES.values() if r.name.lower() == role_name.lower())
    scope = "/" + scope.strip("/")
    sub = ids.subscription_of(scope)
    assignment_id = f"{scope}/providers/{ROLE_ASSIGNMENT_TYPE}/{uuid.uuid4()}"
    resource = {
        "id": assignment_id,
        "name": assignment_id.rsplit("/", 1)[1],
        "type": ROLE_ASSIGNMENT_TYPE,
        "properties": {
            "roleDefinitionId": f"/subscriptions/{sub}/providers/{ROLE_DEFINITION_TYPE}/{role.id}",
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
            "scope": scope,
            "provisioningState": "Succeeded",
        },
        "_effective_at": 0.0,
    }
    with arm.lock:
        arm.resources[assignment_id.lower()] = resource
    return resource


def register_types(arm: ArmModel) -> None:
    """Serve role assignments (extension resources at any scope)."""
    arm.register_type(TypeSpec(ROLE_ASSIGNMENT_TYPE, tracked=False, hooks=RoleAssignmentHooks()))
