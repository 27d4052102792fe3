"""Microsoft.ManagedIdentity: user-assigned identities with their Entra principals."""

from __future__ import annotations

from typing import Any

from emulator.services.arm.models import (
    USER_ASSIGNED_IDENTITY_TYPE,
    ArmModel,
    PutContext,
    TypeHooks,
    TypeSpec,
)


class UserAssignedIdentityHooks(TypeHooks):
    """A principal is made on creation and kept across updates; deleting the identity
    deletes the principal."""

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        props = resource["properties"] = {}
        old = (ctx.existing or {}).get("properties") or {}
        if old.get("principalId"):
            props.update({k: old[k] for k in ("principalId", "clientId", "tenantId")})
        else:
            tenant = ctx.arm.subscription(ctx.rid.subscription).tenant_id
            principal = ctx.arm.entra.add_managed_identity(ctx.rid.name, tenant)
            props.update(
                principalId=principal.object_id,
                clientId=principal.client_id,
                tenantId=tenant,
            )

    def deleted(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        arm.entra.remove(resource["properties"]["principalId"])


def register_types(arm: ArmModel) -> None:
    """Serve user-assigned identities (create answers 201/200 synchronously, as Azure does)."""
    arm.register_type(TypeSpec(USER_ASSIGNED_IDENTITY_TYPE, hooks=UserAssignedIdentityHooks()))
