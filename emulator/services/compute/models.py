"""Microsoft.Compute resource types.

Disk encryption sets (DES) follow current Azure: long-running operations answered 202 with
an Azure-AsyncOperation monitor; a versioned RSA 2048/3072/4096 key in a vault of the same
region (purge protection is recommended, not enforced); an encryption type fixed at
creation; key access of the DES identity checked whenever the key changes after creation;
previousKeys non-empty while disks are re-wrapped; optional automatic rotation to the latest
key version, picked up `auto_rotation_seconds` after it was made on the emulator's clock
(Azure: within an hour), unless the set cannot use it (`autoKeyRotationError`)."""

from __future__ import annotations

import time
from typing import Any

from emulator.clock import iso
from emulator.http import HttpError
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.entra.applications import TOKEN_EXCHANGE
from emulator.services.keyvault.models import (
    KeyVaultModel,
    KeyVersion,
    network_denial,
    public_access_disabled,
)

DISK_ENCRYPTION_SET_TYPE = "Microsoft.Compute/diskEncryptionSets"
ENCRYPTION_TYPES = (
    "EncryptionAtRestWithCustomerKey",
    "EncryptionAtRestWithPlatformAndCustomerKeys",
    "ConfidentialVmEncryptedWithCustomerKey",
)
DES_KEY_OPERATIONS = frozenset({"get", "wrapkey", "unwrapkey"})
CONFIDENTIAL = "ConfidentialVmEncryptedWithCustomerKey"
VM_TYPE = "Microsoft.Compute/virtualMachines"
RSA_SIZES = (2048, 3072, 4096)


class DiskEncryptionSetHooks(TypeHooks):
    """The rules of a disk encryption set."""

    # seconds disks take to be re-wrapped after a key change (previousKeys non-empty)
    rewrap_seconds = 0.2
    # seconds before automatic rotation picks a new key version up (Azure: up to an hour)
    auto_rotation_seconds = 0.5

    def __init__(self, keyvault: KeyVaultModel) -> None:
        self.keyvault = keyvault

    def validate(self, ctx: PutContext) -> None:
        props = ctx.body.get("properties") or {}
        old = (ctx.existing or {}).get("properties") or {}
        identity = ctx.body.get("identity") or (ctx.existing or {}).get("identity") or {}
        if "assigned" not in str(identity.get("type", "")).lower():
            raise HttpError(
                400,
                "InvalidParameter",
                "A disk encryption set needs a managed "
                "identity: identity.type SystemAssigned or UserAssigned.",
            )
        kind = props.get("encryptionType") or old.get("encryptionType")
        if kind and kind not in ENCRYPTION_TYPES:
            raise HttpError(
                400,
                "InvalidParameter",
                f"encryptionType '{kind}' is not one of {', '.join(ENCRYPTION_TYPES)}.",
            )
        if (
            old
            and props.get("encryptionType")
            and props["encryptionType"] != old.get("encryptionType")
        ):
            raise HttpError(
                400,
                "PropertyChangeNotAllowed",
                "Changing property "
                f"'encryptionType' from '{old['encryptionType']}' to "
                f"'{props['encryptionType']}' is not allowed.",
            )
        key_url = (props.get("activeKey") or old.get("activeKey") or {}).get("keyUrl")
        if not key_url:
            raise HttpError(400, "InvalidParameter", "properties.activeKey.keyUrl is required.")
        vault, key, version = self.keyvault.resolve_key_url(key_url)
        if not key_url.rstrip("/").endswith("/" + version.version):
            raise HttpError(
                400,
                "InvalidParameter",
                f"activeKey.keyUrl '{key_url}' must name "
                "a key version (…/keys/<name>/<version>), even with automatic "
                "rotation.",
            )
        source = ((props.get("activeKey") or {}).get("sourceVault") or {}).get("id")
        if source and source.lower() != vault["id"].lower():
            raise HttpError(
                400,
                "InvalidParameter",
                f"activeKey.sourceVault.id '{source}' is "
                f"not the vault of the key ('{vault['id']}').",
            )
        location = ctx.body.get("location") or (ctx.existing or {}).get("location", "")
        if vault["location"] != location.lower().replace(" ", ""):
            raise HttpError(
                400,
                "InvalidParameter",
                f"The key vault '{vault['name']}' is in "
                f"'{vault['location']}'; a disk encryption set in '{location}' "
                "needs a key vault in the same region.",
            )
        # No purge-protection check: Azure accepts a DES on a vault without it; only the docs
        # ask for it (https://github.com/hashicorp/terraform-provider-azurerm/issues/20250,
        # fixed by removing that client-side check in .../pull/20253). Flows check it.
        size = getattr(version.material, "key_size", None)
        if not version.kty.startswith("RSA") or size not in RSA_SIZES:
            raise HttpError(
                400,
                "InvalidParameter",
                f"The key '{key.name}' is {version.kty}"
                f"{f' {size}' if size else ''}; disk encryption sets need RSA keys of "
                "2048, 3072 or 4096 bits.",
            )
        if not version.enabled:
            raise HttpError(400, "KeyVaultKeyDisabled", f"The key '{key_url}' is disabled.")
        if kind == CONFIDENTIAL:
            self._check_confidential(ctx, key_url, version)
        candidate = {
            "id": ctx.rid.id(),
            "identity": identity,
            "properties": {**old, **props},
        }
        if federated_client(candidate):  # the identity exists already: checked at creation
            self.check_access(ctx.arm, candidate, vault, key_url)
        elif ctx.existing:
            self.check_access(ctx.arm, ctx.existing, vault, key_url)

    def _check_confidential(self, ctx: PutContext, key_url: str, version: KeyVersion) -> None:
        """A confidential-VM set: an exportable RSA-HSM key with a release policy
        (https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-
        azure-cli, "--exportable true --policy"); a new key only while every VM on the set is
        deallocated: "Stop all confidential VMs with the same Disk Encryption Set. If one or
        more VMs aren't in the stopped state, none of the VMs can receive the new key."
        (https://learn.microsoft.com/azure/confidential-computing/key-rotation-offline)."""
        if version.kty != "RSA-HSM" or not version.exportable or not version.release_policy:
            raise HttpError(
                400,
                "InvalidParameter",
                f"activeKey.keyUrl = {key_url}: a {CONFIDENTIAL} set needs an exportable "
                f"RSA-HSM key with a release policy (this key: {version.kty}, exportable "
                f"{version.exportable}, release policy {bool(version.release_policy)}).",
            )
        old_url = (((ctx.existing or {}).get("properties") or {}).get("activeKey") or {}).get(
            "keyUrl"
        )
        if ctx.existing is None or old_url == key_url:
            return
        running = vms_not_deallocated(ctx.arm, ctx.rid.id())
        if running:
            raise HttpError(
                409,
                "OperationNotAllowed",
                f"The key of disk encryption set '{ctx.rid.name}' ({CONFIDENTIAL}) can change "
                "only while every virtual machine using it is deallocated; not deallocated: "
                f"{', '.join(running)}.",
            )

    def check_access(
        self, arm: ArmModel, des: dict[str, Any], vault: dict[str, Any], key_url: str
    ) -> None:
        """400 KeyVaultAccessForbidden unless the DES identity may use the key (through the
        federated multi-tenant app when `federatedClientId` is set)."""
        identity = des.get("identity") or {}
        if federated_client(des):
            principal = federated_principal(arm, des, vault, key_url)
            who = f"the service principal '{principal}' of application '{federated_client(des)}'"
        else:
            principal = str(identity.get("principalId") or _user_assigned_principal(arm, identity))
            who = f"the disk encryption set identity '{principal}'"
        # the set reaches its key as a trusted service: the vault's network rules refuse it
        # only when they let no trusted service through (an emulator code: Azure's is
        # undocumented; the inner code says no wait for propagation helps)
        denial = network_denial(vault, trusted_service=True)
        if denial:
            raise HttpError(
                400,
                "KeyVaultAccessForbidden",
                f"Unable to access key vault resource '{key_url}': vault '{vault['name']}': "
                f"{denial}.",
                inner="ForbiddenByConnection"
                if public_access_disabled(vault)
                else "ForbiddenByFirewall",
            )
        key_name = key_url.split("/keys/", 1)[1].split("/", 1)[0]
        granted = self.keyvault.effective_key_operations(vault, principal, key_name)
        missing = sorted(DES_KEY_OPERATIONS - granted)
        if not missing:
            return
        grant = (
            "the role Managed HSM Crypto Service Encryption User at scope "
            f"/keys/{key_name} of the HSM's local RBAC"
            if self.keyvault.rules_of(vault)
            else "get, wrapKey and unwrapKey (or the role Key Vault Crypto Service Encryption User)"
        )
        raise HttpError(
            400,
            "KeyVaultAccessForbidden",
            f"Unable to access key vault resource '{key_url}': {who} lacks key permissions "
            f"{', '.join(missing)}. Grant {grant} and retry.",
        )

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        old = (ctx.existing or {}).get("properties") or {}
        props = resource["properties"] = {**old, **resource["properties"]}
        props.setdefault("encryptionType", ENCRYPTION_TYPES[0])
        props.setdefault("rotationToLatestKeyVersionEnabled", False)
        vault, _, _ = self.keyvault.resolve_key_url(props["activeKey"]["keyUrl"])
        props["activeKey"] = {
            "keyUrl": props["activeKey"]["keyUrl"],
            "sourceVault": {"id": vault["id"]},
        }
        props.setdefault("previousKeys", [])
        resource["_rewrap_until"] = (ctx.existing or {}).get("_rewrap_until", 0.0)
        old_url = (old.get("activeKey") or {}).get("keyUrl")
        if old_url and old_url != props["activeKey"]["keyUrl"]:
            self._rotated(resource, old["activeKey"])

    def _rotated(self, resource: dict[str, Any], previous: dict[str, Any]) -> None:
        """The active key changed: disks are re-wrapped for a while."""
        props = resource["properties"]
        props["previousKeys"] = [previous]
        props["lastKeyRotationTimestamp"] = iso(self.keyvault.clock.now())
        resource["_rewrap_until"] = time.monotonic() + self.rewrap_seconds

    def key_problem(self, arm: ArmModel, des: dict[str, Any]) -> HttpError | None:
        """Why the set cannot use its active key now (missing, disabled, no access), or None."""
        key_url = des["properties"]["activeKey"]["keyUrl"]
        try:
            vault, _, version = self.keyvault.resolve_key_url(key_url)
            if not version.enabled:
                raise HttpError(400, "KeyVaultKeyDisabled", f"The key '{key_url}' is disabled.")
            self.check_access(arm, des, vault, key_url)
        except HttpError as exc:
            return exc
        return None

    def refresh(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        props = resource["properties"]
        if props.get("previousKeys") and time.monotonic() >= resource.get("_rewrap_until", 0):
            props["previousKeys"] = []
        if not props.get("rotationToLatestKeyVersionEnabled"):
            return
        try:
            vault, key, current = self.keyvault.resolve_key_url(props["activeKey"]["keyUrl"])
        except HttpError as exc:
            props["autoKeyRotationError"] = {"code": exc.code, "message": exc.message}
            return
        latest = key.versions[-1]
        now = self.keyvault.clock.now()
        if latest is current:
            props.pop("autoKeyRotationError", None)  # nothing to pick up: no error either
            return
        if now < latest.created + self.auto_rotation_seconds:
            return
        base = props["activeKey"]["keyUrl"].rsplit("/", 1)[0]
        try:
            running = (
                vms_not_deallocated(arm, resource["id"])
                if props.get("encryptionType") == CONFIDENTIAL
                else []
            )
            if running:
                raise HttpError(
                    409,
                    "OperationNotAllowed",
                    f"Virtual machines not deallocated: {', '.join(running)}.",
                )
            if not latest.enabled:
                raise HttpError(
                    400, "KeyVaultKeyDisabled", f"The key '{base}/{latest.version}' is disabled."
                )
            self.check_access(arm, resource, vault, f"{base}/{latest.version}")
        except HttpError as exc:
            props["autoKeyRotationError"] = {"code": exc.code, "message": exc.message}
            return
        props.pop("autoKeyRotationError", None)
        previous = props["activeKey"]
        props["activeKey"] = {**previous, "keyUrl": f"{base}/{latest.version}"}
        self._rotated(resource, previous)


def disk_sets(disk: dict[str, Any]) -> list[str]:
    """The disk encryption sets a VM disk names: `managedDisk.diskEncryptionSet`, or for a
    confidential VM's OS disk `managedDisk.securityProfile.diskEncryptionSet`."""
    managed = disk.get("managedDisk") or {}
    found = [
        (managed.get("diskEncryptionSet") or {}).get("id"),
        ((managed.get("securityProfile") or {}).get("diskEncryptionSet") or {}).get("id"),
    ]
    return [str(d) for d in found if d]


def vms_not_deallocated(arm: ArmModel, des_id: str) -> list[str]:
    """The names of the VMs with a disk on the set that are not deallocated."""
    wanted = des_id.lower()
    with arm.lock:
        vms = [r for r in arm.resources.values() if r["type"] == VM_TYPE]
    names = []
    for vm in vms:
        storage = vm["properties"].get("storageProfile") or {}
        disks = [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]
        on_set = any(d.lower() == wanted for disk in disks for d in disk_sets(disk))
        if on_set and vm.get("_power", "running") != "deallocated":
            names.append(str(vm["name"]))
    return sorted(names)


def federated_client(des: dict[str, Any]) -> str | None:
    """The multi-tenant app a set reaches its key through, or None ('None' clears it)."""
    value = str((des.get("properties") or {}).get("federatedClientId") or "")
    return None if value in ("", "None") else value


def _user_assigned_principal(arm: ArmModel, identity: dict[str, Any]) -> str | None:
    """The principal id of a set's (first) user-assigned identity, from the request or the
    stored resource."""
    for uid, entry in (identity.get("userAssignedIdentities") or {}).items():
        if (entry or {}).get("principalId"):
            return str(entry["principalId"])
        uai = arm.get(uid)
        if uai is not None:
            return str(uai["properties"]["principalId"])
    return None


def federated_principal(
    arm: ArmModel, des: dict[str, Any], vault: dict[str, Any], key_url: str
) -> str:
    """The customer tenant's service principal a cross-tenant set acts as, or a 400 naming
    the side and the piece missing, in the words of Entra's token errors (AADSTS700016 app not
    found in a directory, AADSTS70021 no matching federated identity record:
    https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
    The chain: the set's user-assigned identity (provider tenant) → a federated credential on
    the provider's multi-tenant app → the app's service principal in the vault's tenant
    (https://learn.microsoft.com/azure/virtual-machines/disks-cross-tenant-customer-managed-keys)."""
    app_id = str(federated_client(des))
    provider = arm.subscription(ids.subscription_of(des["id"])).tenant_id
    customer = str(vault["properties"].get("tenantId") or provider).lower()
    subject = _user_assigned_principal(arm, des.get("identity") or {})

    def refused(side: str, tenant: str, reason: str) -> HttpError:
        return HttpError(
            400,
            "KeyVaultAccessForbidden",
            f"Unable to access key vault resource '{key_url}' with federatedClientId "
            f"'{app_id}' ({side} tenant '{tenant}'): {reason}",
        )

    if subject is None:
        raise refused(
            "service provider",
            provider,
            "federatedClientId needs a user-assigned identity on the disk encryption set.",
        )
    app = arm.entra.apps.by_app_id(app_id)
    if app is None or app.tenant_id != provider:
        raise refused(
            "service provider",
            provider,
            f"AADSTS700016: Application with identifier '{app_id}' was not found in the "
            f"directory '{provider}'.",
        )
    if not app.federated_by(provider, subject):
        raise refused(
            "service provider",
            provider,
            "AADSTS70021: No matching federated identity record found for presented assertion. "
            f"Assertion Issuer: 'https://login.microsoftonline.com/{provider}/v2.0'. Assertion "
            f"Subject: '{subject}'. Assertion Audience: '{TOKEN_EXCHANGE}'.",
        )
    if customer != provider and not app.multi_tenant:
        raise refused(
            "service provider",
            provider,
            f"the application '{app_id}' is single-tenant (signInAudience "
            f"{app.sign_in_audience}); a key in another tenant needs AzureADMultipleOrgs.",
        )
    installed = arm.entra.by_client_id(app_id, customer)
    if installed is None:
        raise refused(
            "customer",
            customer,
            f"AADSTS700016: Application with identifier '{app_id}' was not found in the "
            f"directory '{customer}'. This can happen if the application has not been installed "
            "by the administrator of the tenant.",
        )
    return installed.object_id


def register_types(arm: ArmModel, keyvault: KeyVaultModel) -> DiskEncryptionSetHooks:
    """Serve the compute types; returns the DES rules (other services apply them too)."""
    des_hooks = DiskEncryptionSetHooks(keyvault)
    arm.register_type(
        TypeSpec(
            DISK_ENCRYPTION_SET_TYPE,
            lro="azure-async-operation",
            create_status=202,
            update_status=202,
            delete_lro="location",
            hooks=des_hooks,
        )
    )
    return des_hooks


def check_encryption_at_host(
    arm: ArmModel, subscription: str, field: str, pool: dict[str, Any]
) -> None:
    """`enableEncryptionAtHost` (an AKS pool; a VM's `securityProfile.encryptionAtHost`)
    needs the subscription's Microsoft.Compute/EncryptionAtHost feature registered; Azure's
    answer: https://github.com/Azure/azure-cli/issues/16788."""
    if not pool.get("enableEncryptionAtHost"):
        return
    try:
        registered = arm.feature("Microsoft.Compute", "EncryptionAtHost", subscription).state
    except HttpError:
        registered = "NotRegistered"
    if registered != "Registered":
        raise HttpError(
            400,
            "InvalidParameter",
            f"{field}: The property 'securityProfile.encryptionAtHost' is not valid because the "
            "'Microsoft.Compute/EncryptionAtHost' feature is not enabled for this subscription.",
        )
