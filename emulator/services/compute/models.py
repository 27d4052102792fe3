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
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.keyvault.models import KeyVaultModel

DISK_ENCRYPTION_SET_TYPE = "Microsoft.Compute/diskEncryptionSets"
ENCRYPTION_TYPES = (
    "EncryptionAtRestWithCustomerKey",
    "EncryptionAtRestWithPlatformAndCustomerKeys",
    "ConfidentialVmEncryptedWithCustomerKey",
)
DES_KEY_OPERATIONS = frozenset({"get", "wrapkey", "unwrapkey"})
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
        if ctx.existing:
            self.check_access(ctx.arm, ctx.existing, vault, key_url)

    def check_access(
        self, arm: ArmModel, des: dict[str, Any], vault: dict[str, Any], key_url: str
    ) -> None:
        """400 KeyVaultAccessForbidden unless the DES identity may use the key."""
        principal = (des.get("identity") or {}).get("principalId")
        for uai in ((des.get("identity") or {}).get("userAssignedIdentities") or {}).values():
            principal = principal or uai.get("principalId")
        granted = self.keyvault.effective_key_operations(vault, str(principal))
        missing = sorted(DES_KEY_OPERATIONS - granted)
        if missing:
            raise HttpError(
                400,
                "KeyVaultAccessForbidden",
                f"Unable to access key vault "
                f"resource '{key_url}': the disk encryption set identity "
                f"'{principal}' lacks key permissions {', '.join(missing)}. Grant "
                "get, wrapKey and unwrapKey (or the role Key Vault Crypto Service "
                "Encryption User) and retry.",
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
