"""Microsoft.Authorization: built-in role definitions and role assignments at any scope."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from emulator.http import HttpError
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec

ROLE_ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"


@dataclass(frozen=True)
class RoleDefinition:
    """A built-in role: its id, name and the Key Vault key operations it allows."""

    id: str
    name: str
    key_operations: frozenset[str]
    description: str

    def to_json(self, scope: str) -> dict[str, Any]:
        """The role definition as ARM serves it."""
        data_actions = sorted(
            f"Microsoft.KeyVault/vaults/keys/{op}/action" for op in self.key_operations
        )
        return {
            "id": f"{scope}/providers/{ROLE_DEFINITION_TYPE}/{self.id}",
            "name": self.id,
            "type": ROLE_DEFINITION_TYPE,
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [
                    {
                        "actions": [],
                        "notActions": [],
                        "dataActions": data_actions,
                        "notDataActions": [],
                    }
                ],
            },
        }


ALL_KEY_OPERATIONS = frozenset(
    {
        "get",
        "list",
        "create",
        "import",
        "update",
        "delete",
        "recover",
        "backup",
        "restore",
        "purge",
        "rotate",
        "getrotationpolicy",
        "setrotationpolicy",
        "encrypt",
        "decrypt",
        "wrapkey",
        "unwrapkey",
        "sign",
        "verify",
        "release",
    }
)
BUILT_IN_ROLES = {
    role.id: role
    for role in (
        RoleDefinition(
            "00482a5a-887f-4fb3-b363-3b7fe8e74483",
            "Key Vault Administrator",
            ALL_KEY_OPERATIONS,
            "Perform all data plane operations on a key vault.",
        ),
        RoleDefinition(
            "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
            "Key Vault Crypto Officer",
            ALL_KEY_OPERATIONS,
            "Perform any action on the keys of a key vault.",
        ),
        RoleDefinition(
            "e147488a-f6f5-4113-8e2d-b22465e65bf6",
            "Key Vault Crypto Service Encryption User",
            frozenset({"get", "wrapkey", "unwrapkey"}),
            "Read metadata of keys and perform wrap/unwrap operations.",
        ),
        RoleDefinition(
            "12338af0-0e69-4776-bea7-57ae8d297424",
            "Key Vault Crypto User",
            frozenset(
                {
                    "get",
                    "list",
                    "update",
                    "encrypt",
                    "decrypt",
                    "wrapkey",
                    "unwrapkey",
                    "sign",
                    "verify",
                }
            ),
            "Perform cryptographic operations using keys.",
        ),
        RoleDefinition(
            "21090545-7ca7-4776-b22c-e363652d74d2",
            "Key Vault Reader",
            frozenset({"get", "list", "getrotationpolicy"}),
            "Read metadata of key vaults and its keys.",
        ),
        RoleDefinition(
            "acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader", frozenset(), "View all resources."
        ),
        RoleDefinition(
            "b24988ac-6180-42a0-ab88-20f7382dd24c",
            "Contributor",
            frozenset(),
            "Manage all resources, but not access.",
        ),
        RoleDefinition(
            "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            "Owner",
            frozenset(),
            "Manage all resources, including access.",
        ),
    )
}


def role_by_definition_id(definition_id: str) -> RoleDefinition | None:
    """The built-in role whose id ends `definition_id` (a full id or a bare GUID)."""
    return BUILT_IN_ROLES.get(definition_id.rstrip("/").rsplit("/", 1)[-1].lower())


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
        if principal is None or not principal.visible:
            raise HttpError(
                400,
                "PrincipalNotFound",
                f"Principal {principal_id} does not exist in the directory "
                f"{ctx.arm.entra.tenant_id}. Check that you have the correct principal ID. "
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


def allowed_key_operations(arm: ArmModel, scope: str, principal_id: str) -> set[str]:
    """The key operations the principal's effective role assignments allow at `scope`."""
    now = time.monotonic()
    ops: set[str] = set()
    for assignment in assignments_at(arm, scope):
        props = assignment["properties"]
        if props["principalId"] != principal_id or assignment["_effective_at"] > now:
            continue
        role = role_by_definition_id(props["roleDefinitionId"])
        if role:
            ops |= role.key_operations
    return ops


def register_types(arm: ArmModel) -> None:
    """Serve role assignments (extension resources at any scope)."""
    arm.register_type(TypeSpec(ROLE_ASSIGNMENT_TYPE, tracked=False, hooks=RoleAssignmentHooks()))
