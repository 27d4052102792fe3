"""Managed HSM: the ARM resource (Microsoft.KeyVault/managedHSMs) and its data plane's own
rules: activation by security domain download, local RBAC instead of access policies, and
HSM-protected key types only. Keys live in the Key Vault model (one origin per HSM, as for
vaults); this model decides who may use them.

Sources: ARM shape and states
https://github.com/Azure/azure-rest-api-specs/blob/main/specification/keyvault/
resource-manager/Microsoft.KeyVault/stable/2023-07-01/managedHsm.json (create answers 200/202
and is polled; soft delete with deletedManagedHSMs get/list/purge, createMode recover); activation
https://learn.microsoft.com/azure/key-vault/managed-hsm/quick-create-cli#activate-your-managed-hsm
("until the HSM is activated, it is not available for use"); local RBAC scopes `/`, `/keys`,
`/keys/<name>` https://learn.microsoft.com/azure/key-vault/managed-hsm/role-management and the
refusal text "Not authorized to access <action> on <scope>"
(https://github.com/Azure/azure-cli/issues/32719); key types "Managed HSMs only support
HSM-protected keys" (https://learn.microsoft.com/azure/key-vault/keys/about-keys)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from emulator.clock import iso
from emulator.http import HttpError
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.entra.models import Principal
from emulator.services.keyvault.models import KeyVaultModel
from emulator.services.managedhsm.roles import (
    ADMINISTRATOR,
    KEY_OPERATION_ACTIONS,
    PREFIX,
    HsmRole,
    role_of,
)

HSM_TYPE = "Microsoft.KeyVault/managedHSMs"
HSM_AUDIENCE = "https://managedhsm.azure.net"
HSM_KEY_TYPES = ("RSA-HSM", "EC-HSM", "oct-HSM")
SKUS = ("Standard_B1", "Custom_B32", "Custom_B6")
_NAME = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
_SCOPE = re.compile(r"^/(keys(/[^/]+)?)?$", re.IGNORECASE)
NOT_ACTIVATED = {
    "activationStatus": "NotActivated",
    "activationStatusMessage": "Your HSM is not yet activated. Download the security domain "
    "to activate it.",
}
ACTIVE = {
    "activationStatus": "Active",
    "activationStatusMessage": "Your HSM has been activated and can be used for cryptographic "
    "operations.",
}


def normal_scope(scope: str) -> str:
    """A local RBAC scope as stored: `/`, `/keys` or `/keys/<name>` (400 otherwise)."""
    value = "/" + (scope or "").strip("/")
    if not _SCOPE.match(value):
        raise HttpError(
            400,
            "InvalidScope",
            f"scope = {scope}: Managed HSM scopes are '/', '/keys' or '/keys/<key name>'.",
        )
    return value.lower() if value.lower() in ("/", "/keys") else value


def covers(granted: str, target: str) -> bool:
    """Whether an assignment at scope `granted` applies at scope `target` (`/` and `/keys`
    are both HSM-wide for keys)."""
    granted, target = granted.lower(), target.lower()
    if granted == "/" or granted == target:
        return True
    return target.startswith(granted + "/")


@dataclass
class Assignment:
    """A local role assignment."""

    name: str
    scope: str
    role: HsmRole
    principal_id: str
    effective_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """As the HSM serves it."""
        prefix = "" if self.scope == "/" else self.scope
        return {
            "id": f"{prefix}/providers/Microsoft.Authorization/roleAssignments/{self.name}",
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "scope": self.scope,
                "roleDefinitionId": self.role.definition_id,
                "principalId": self.principal_id,
            },
        }


@dataclass
class HsmState:
    """What the data plane of one HSM holds beyond its keys."""

    activated: bool = False
    assignments: dict[str, Assignment] = field(default_factory=dict)  # by lower-case name
    downloaded: bool = False


@dataclass
class DeletedHsm:
    """A soft-deleted HSM: its last state."""

    resource: dict[str, Any]
    deleted_at: float

    def to_json(self) -> dict[str, Any]:
        """As deletedManagedHSMs serves it."""
        props, name = self.resource["properties"], self.resource["name"]
        location = self.resource["location"]
        days = int(props.get("softDeleteRetentionInDays") or 90)
        sub = ids.subscription_of(self.resource["id"])
        return {
            "id": f"/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{location}/"
            f"deletedManagedHSMs/{name}",
            "name": name,
            "type": "Microsoft.KeyVault/deletedManagedHSMs",
            "properties": {
                "mhsmId": self.resource["id"],
                "location": location,
                "deletionDate": iso(self.deleted_at),
                "scheduledPurgeDate": iso(self.deleted_at + days * 86400),
                "purgeProtectionEnabled": bool(props.get("enablePurgeProtection")),
                "tags": self.resource.get("tags") or {},
            },
        }


class ManagedHsmModel:
    """Every HSM's activation and local RBAC, and its soft-deleted HSMs; the key-store rules
    the Key Vault model applies to keys on an HSM origin."""

    audience = HSM_AUDIENCE

    def __init__(self, arm: ArmModel, keyvault: KeyVaultModel) -> None:
        self.arm, self.keyvault = arm, keyvault
        self.lock = threading.RLock()
        self.states: dict[str, HsmState] = {}  # by lower-case resource id
        self.deleted: dict[str, DeletedHsm] = {}  # by lower-case name

    def state(self, resource: dict[str, Any]) -> HsmState:
        """The data-plane state of an HSM."""
        with self.lock:
            return self.states.setdefault(resource["id"].lower(), HsmState())

    # -- activation --------------------------------------------------------------------
    def require_active(self, resource: dict[str, Any]) -> None:
        """403 while the security domain has not been downloaded."""
        if not self.state(resource).activated:
            raise HttpError(
                403,
                "Forbidden",
                f"The managed HSM '{resource['name']}' is not activated: download its security "
                "domain (3 or more certificates and a quorum) to activate it.",
                inner="HSMNotActivated",
            )

    def activate(self, resource: dict[str, Any]) -> None:
        """The security domain was downloaded: the HSM is active."""
        state = self.state(resource)
        state.activated = state.downloaded = True
        resource["properties"]["securityDomainProperties"] = dict(ACTIVE)

    # -- local RBAC ---------------------------------------------------------------------
    def actions(self, resource: dict[str, Any], object_id: str, scope: str) -> set[str]:
        """The data actions (without prefix) in effect for a principal at `scope`."""
        now = time.monotonic()
        with self.lock:
            found = list(self.state(resource).assignments.values())
        return {
            action
            for a in found
            if a.principal_id == object_id and a.effective_at <= now and covers(a.scope, scope)
            for action in a.role.data_actions
        }

    def require(
        self, resource: dict[str, Any], principal: Principal, action: str, scope: str
    ) -> None:
        """403 AccessDenied unless the caller holds `action` at `scope`."""
        if action in self.actions(resource, principal.object_id, scope):
            return
        raise HttpError(
            403,
            "AccessDenied",
            f"Not authorized to access {PREFIX}/{action} on {scope} (Activity ID: "
            f"{uuid.uuid4()}). Caller: appid={principal.client_id};oid={principal.object_id}",
        )

    def assign(
        self, resource: dict[str, Any], scope: str, name: str, role_id: str, principal_id: str
    ) -> Assignment:
        """Create a role assignment (in effect after the `access-grant` delayed effect)."""
        role = role_of(role_id or "")
        if role is None:
            raise HttpError(
                400,
                "BadParameter",
                f"roleDefinitionId = {role_id}: not a role definition of this HSM.",
            )
        if not principal_id:
            raise HttpError(400, "BadParameter", "properties.principalId is required.")
        assignment = Assignment(
            name,
            normal_scope(scope),
            role,
            principal_id,
            self.arm.faults.effect_time("access-grant"),
        )
        with self.lock:
            assignments = self.state(resource).assignments
            existing = assignments.get(name.lower())
            if existing is not None:
                if (existing.scope, existing.role, existing.principal_id) != (
                    assignment.scope,
                    role,
                    principal_id,
                ):
                    raise HttpError(
                        409,
                        "RoleAssignmentExists",
                        f"The role assignment '{name}' exists with other properties.",
                    )
                return existing
            assignments[name.lower()] = assignment
        return assignment

    def grant(self, resource: dict[str, Any], principal_id: str, role_id: str, scope: str) -> None:
        """Assign a role at once, without checks (initial administrators, tests)."""
        assignment = self.assign(resource, scope, str(uuid.uuid4()), role_id, principal_id)
        assignment.effective_at = 0.0

    # -- the key-store rules the Key Vault model applies ------------------------------------
    def key_operations(
        self, resource: dict[str, Any], object_id: str, key_name: str | None
    ) -> set[str]:
        """The key operations (Key Vault names) a principal holds on a key (None: HSM-wide)."""
        if not self.state(resource).activated:
            return set()
        scope = f"/keys/{key_name}" if key_name else "/keys"
        held = self.actions(resource, object_id, scope)
        return {op for op, action in KEY_OPERATION_ACTIONS.items() if action in held}

    def authorize(
        self, resource: dict[str, Any], principal: Principal, operation: str, key_name: str | None
    ) -> None:
        """403 unless the HSM is active and the caller may do `operation` on the key."""
        self.require_active(resource)
        scope = f"/keys/{key_name}" if key_name else "/keys"
        self.require(resource, principal, KEY_OPERATION_ACTIONS[operation.lower()], scope)

    def check_key_type(self, resource: dict[str, Any], kty: str) -> None:
        """Only HSM-protected key types."""
        if kty not in HSM_KEY_TYPES:
            raise HttpError(
                400,
                "BadParameter",
                f"kty = {kty}: a managed HSM holds HSM-protected keys only "
                f"({', '.join(HSM_KEY_TYPES)}).",
            )

    # -- soft delete --------------------------------------------------------------------
    def deleted_hsm(self, subscription: str, name: str, location: str | None) -> DeletedHsm:
        """A soft-deleted HSM of a subscription (in `location`, if given), or 404."""
        with self.lock:
            found = self.deleted.get(name.lower())
        if (
            found is None
            or ids.subscription_of(found.resource["id"]).lower() != subscription.lower()
            or (location is not None and found.resource["location"] != location.lower())
        ):
            raise HttpError(
                404,
                "ResourceNotFound",
                f"The deleted managed HSM '{name}' was not found in subscription '{subscription}'.",
            )
        return found

    def list_deleted(self, subscription: str) -> list[DeletedHsm]:
        """The soft-deleted HSMs of a subscription, by name."""
        with self.lock:
            found = list(self.deleted.values())
        return sorted(
            (d for d in found if ids.subscription_of(d.resource["id"]).lower() == subscription),
            key=lambda d: d.resource["name"].lower(),
        )

    def purge(self, subscription: str, location: str, name: str) -> None:
        """Purge a soft-deleted HSM (refused under purge protection): its name, keys and
        local RBAC are gone."""
        deleted = self.deleted_hsm(subscription, name, location)
        if deleted.resource["properties"].get("enablePurgeProtection"):
            raise HttpError(
                405, "MethodNotAllowed", "Operation 'DeletedManagedHsmPurge' is not allowed."
            )
        with self.lock:
            self.deleted.pop(name.lower(), None)
            self.states.pop(deleted.resource["id"].lower(), None)
        self.keyvault.close_vault(deleted.resource["id"])


class ManagedHsmHooks(TypeHooks):
    """The rules of the ARM resource; its data-plane origin opens with it."""

    def __init__(self, model: ManagedHsmModel) -> None:
        self.model = model

    def validate(self, ctx: PutContext) -> None:
        name = ctx.rid.name
        if not _NAME.match(name):
            raise HttpError(
                400,
                "InvalidParameter",
                f"name = {name}: 3-24 letters, digits and single hyphens, starting with a "
                "letter and ending with a letter or digit.",
            )
        props = ctx.body.get("properties") or {}
        old = (ctx.existing or {}).get("properties") or {}
        sku = (ctx.body.get("sku") or (ctx.existing or {}).get("sku") or {}).get("name")
        if sku not in SKUS:
            raise HttpError(400, "InvalidParameter", f"sku.name = {sku}: one of {', '.join(SKUS)}.")
        for required in ("tenantId", "initialAdminObjectIds"):
            if not props.get(required) and not old.get(required):
                raise HttpError(400, "InvalidParameter", f"properties.{required} is required.")
        if props.get("enableSoftDelete") is False:
            raise HttpError(
                400,
                "InvalidParameter",
                "properties.enableSoftDelete = false: soft delete cannot be turned off.",
            )
        if old.get("enablePurgeProtection") and props.get("enablePurgeProtection") is False:
            raise HttpError(
                400,
                "InvalidParameter",
                "properties.enablePurgeProtection = false: purge protection cannot be "
                "disabled once enabled.",
            )
        with self.model.lock:
            held = self.model.deleted.get(name.lower())
        recover = str(props.get("createMode") or "").lower() == "recover"
        if recover and (held is None or held.resource["id"].lower() != ctx.rid.id().lower()):
            raise HttpError(
                400,
                "InvalidParameter",
                f"properties.createMode = recover: no deleted managed HSM '{ctx.rid.id()}'.",
            )
        if held is not None and not recover:
            raise HttpError(
                409,
                "ConflictError",
                f"A managed HSM named '{name}' exists in deleted state; recover it "
                "(createMode recover) or purge it first.",
            )
        with ctx.arm.lock:
            for resource in ctx.arm.resources.values():
                if (
                    resource["type"] == HSM_TYPE
                    and resource["name"].lower() == name.lower()
                    and resource["id"].lower() != ctx.rid.id().lower()
                ):
                    raise HttpError(
                        409,
                        "ConflictError",
                        f"The managed HSM name '{name}' is already in use (names are global).",
                    )

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        old = (ctx.existing or {}).get("properties") or {}
        if str(resource["properties"].pop("createMode", "") or "").lower() == "recover":
            with self.model.lock:
                recovered = self.model.deleted.pop(ctx.rid.name.lower())
            old = recovered.resource["properties"]  # its keys and local RBAC come back too
        props = resource["properties"] = {**old, **resource["properties"]}
        props.setdefault("enableSoftDelete", True)
        props.setdefault("softDeleteRetentionInDays", 90)
        props.setdefault("enablePurgeProtection", False)
        props.setdefault("publicNetworkAccess", "Enabled")
        props["statusMessage"] = "The Managed HSM is provisioned and ready to use."
        resource["sku"] = {"family": "B", "name": resource["sku"]["name"]}
        data = self.model.keyvault.open_vault(resource["id"], resource["name"])
        props["hsmUri"] = f"https://127.0.0.1:{data.port}/"
        state = self.model.state(resource)
        props["securityDomainProperties"] = dict(ACTIVE if state.activated else NOT_ACTIVATED)
        if ctx.existing is None and not state.assignments:
            for admin in props["initialAdminObjectIds"]:
                self.model.grant(resource, admin, ADMINISTRATOR, "/")

    def refresh(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        activated = self.model.state(resource).activated
        resource["properties"]["securityDomainProperties"] = dict(
            ACTIVE if activated else NOT_ACTIVATED
        )

    def deleted(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        record = {k: v for k, v in resource.items() if not k.startswith("_")}
        with self.model.lock:
            self.model.deleted[resource["name"].lower()] = DeletedHsm(record, time.time())


def register_types(arm: ArmModel, keyvault: KeyVaultModel) -> ManagedHsmModel:
    """Serve managed HSMs (create answers 200 with provisioningState Provisioning, polled to
    Succeeded; delete is synchronous) and make the Key Vault model apply their rules."""
    model = ManagedHsmModel(arm, keyvault)
    arm.register_type(
        TypeSpec(
            HSM_TYPE,
            lro="provisioning-state",
            create_status=200,
            update_status=200,
            pending_state="Provisioning",
            hooks=ManagedHsmHooks(model),
        )
    )
    keyvault.store_rules[HSM_TYPE.lower()] = model
    return model
