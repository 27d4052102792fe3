"""Microsoft.ManagedIdentity: user-assigned identities with their Entra principals, and the
federated identity credentials that let an external workload act as one."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from emulator.http import HttpError
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


FEDERATED_CREDENTIAL_TYPE = f"{USER_ASSIGNED_IDENTITY_TYPE}/federatedIdentityCredentials"
MAX_FEDERATED_CREDENTIALS = 20


class FederatedCredentialHooks(TypeHooks):
    """An https issuer, a subject, one audience; at most 20 per identity, each issuer and
    subject pair once (https://learn.microsoft.com/entra/workload-id/
    workload-identity-federation-considerations)."""

    def validate(self, ctx: PutContext) -> None:
        props = ctx.body.get("properties") or {}
        issuer, subject = str(props.get("issuer") or ""), str(props.get("subject") or "")
        if urlsplit(issuer).scheme != "https" or not urlsplit(issuer).netloc:
            raise HttpError(
                400, "BadRequest", f"properties.issuer = {issuer}: an https URL is required."
            )
        if not subject:
            raise HttpError(400, "BadRequest", "properties.subject is required.")
        audiences = props.get("audiences")
        if not isinstance(audiences, list) or len(audiences) != 1:
            raise HttpError(
                400,
                "BadRequest",
                f"properties.audiences = {audiences}: exactly one audience is supported.",
            )
        siblings = [
            r
            for r in ctx.arm.children(ctx.rid.parent, FEDERATED_CREDENTIAL_TYPE)
            if r["id"].lower() != ctx.rid.id().lower()
        ]
        if len(siblings) >= MAX_FEDERATED_CREDENTIALS:
            raise HttpError(
                400,
                "BadRequest",
                f"An identity holds at most {MAX_FEDERATED_CREDENTIALS} federated identity "
                "credentials.",
            )
        for other in siblings:
            theirs = other["properties"]
            if (theirs["issuer"], theirs["subject"]) == (issuer, subject):
                raise HttpError(
                    409,
                    "Conflict",
                    f"The federated identity credential '{other['name']}' already has issuer "
                    f"'{issuer}' and subject '{subject}'.",
                )


def register_types(arm: ArmModel) -> None:
    """Serve user-assigned identities (create answers 201/200 synchronously, as Azure does)
    and their federated identity credentials."""
    arm.register_type(TypeSpec(USER_ASSIGNED_IDENTITY_TYPE, hooks=UserAssignedIdentityHooks()))
    arm.register_type(
        TypeSpec(FEDERATED_CREDENTIAL_TYPE, tracked=False, hooks=FederatedCredentialHooks())
    )
