"""Microsoft.ContainerRegistry/registries with the rules of customer-managed-key encryption.

Premium only; encryption enabled only at creation, with a user-assigned identity, and never
disabled; RSA or RSA-HSM keys, in a vault or a managed HSM (the CLI documents rotating to a
Managed HSM key: learn.microsoft.com/cli/azure/acr/encryption, az acr encryption rotate-key;
on an HSM the identity needs its local RBAC role at the key's scope); the identity named by
`keyVaultProperties.identity` (a user-assigned identity's client id, or `system`) needs get,
wrapKey and unwrapKey, and the vault firewall must let trusted services through; a
versionless key is followed to its latest version `auto_rotation_seconds` after that version
was made, on the emulator's clock (Azure: within an hour, learn.microsoft.com/azure/
container-registry/tutorial-rotate-revoke-customer-managed-keys). `importImage` stands for the
registry's data operations: it fails while the key is unreachable."""

from __future__ import annotations

import re
from typing import Any

from emulator.clock import iso
from emulator.http import HttpError
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.keyvault.models import KeyVaultModel, network_denial

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
SKUS = ("Basic", "Standard", "Premium")
KEY_OPERATIONS = frozenset({"get", "wrapkey", "unwrapkey"})
SYSTEM = "system"
_NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")


def lookup(mapping: dict[str, Any] | None, name: str) -> Any:
    """A property read case-insensitively, as resource providers read request bodies."""
    for key, value in (mapping or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def encryption_of(props: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The encryption status ('enabled'/'disabled') and keyVaultProperties of properties."""
    encryption = lookup(props, "encryption") or {}
    status = str(lookup(encryption, "status") or "disabled").lower()
    return status, lookup(encryption, "keyVaultProperties") or {}


def cmk_error(registry_id: str, message: str) -> HttpError:
    """The error of a key the registry cannot use."""
    return HttpError(
        400,
        "KeyVaultAccessForbidden",
        f"The registry '{registry_id}' cannot access its customer-managed key: {message}. "
        "For more information on bring your own key, please visit 'https://aka.ms/acr/cmk'.",
    )


class RegistryHooks(TypeHooks):
    """The rules of a registry encrypted with a customer-managed key."""

    # seconds before a new version of a versionless key is picked up (Azure: up to an hour)
    auto_rotation_seconds = 0.5

    def __init__(self, keyvault: KeyVaultModel) -> None:
        self.keyvault = keyvault

    def validate(self, ctx: PutContext) -> None:
        name = ctx.rid.name
        if not _NAME.match(name):
            raise HttpError(
                400,
                "InvalidParameter",
                f"The registry name '{name}' is invalid: 5-50 letters and digits.",
            )
        sku = ((ctx.body.get("sku") or (ctx.existing or {}).get("sku")) or {}).get("name")
        if sku not in SKUS:
            raise HttpError(400, "InvalidSku", f"sku.name '{sku}' is not one of {', '.join(SKUS)}.")
        props = ctx.body.get("properties") or {}
        old_status, _ = encryption_of((ctx.existing or {}).get("properties"))
        status, kvp = encryption_of(props) if lookup(props, "encryption") else (old_status, {})
        if ctx.existing and old_status != status:
            if status == "enabled":
                raise HttpError(
                    400,
                    "CustomerManagedKeyEncryptionNotAllowed",
                    "Encryption with a customer-managed key can only be enabled when the "
                    f"registry is created; registry '{name}' was created without it.",
                )
            raise HttpError(
                400,
                "CustomerManagedKeyCannotBeDisabled",
                f"Encryption with a customer-managed key cannot be disabled (registry '{name}').",
            )
        if status != "enabled":
            return
        if sku != "Premium":
            raise HttpError(
                400,
                "CustomerManagedKeyNotSupported",
                f"Encryption with a customer-managed key needs the Premium SKU, not '{sku}'.",
            )
        policies = props.get("policies") or {}
        if str((policies.get("trustPolicy") or {}).get("status", "")).lower() == "enabled":
            raise HttpError(
                400,
                "ContentTrustNotSupported",
                "Content trust is not supported on a registry encrypted with a "
                "customer-managed key.",
            )
        if not ctx.existing and str(lookup(kvp, "identity") or "").lower() == SYSTEM:
            raise HttpError(
                400,
                "InvalidIdentity",
                "A new registry encrypted with a customer-managed key needs a user-assigned "
                "identity; switch to the system-assigned identity after creation.",
            )
        if ctx.existing is None and not lookup(kvp, "keyIdentifier"):
            raise HttpError(
                400,
                "InvalidParameter",
                "properties.encryption.keyVaultProperties.keyIdentifier is required.",
            )

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        old = (ctx.existing or {}).get("properties") or {}
        props = resource["properties"] = {**old, **resource["properties"]}
        props.setdefault("loginServer", f"{ctx.rid.name.lower()}.azurecr.io")
        props.setdefault("creationDate", iso(self.keyvault.clock.now()))
        props.setdefault("adminUserEnabled", False)
        props.setdefault("publicNetworkAccess", "Enabled")
        props.setdefault("networkRuleBypassOptions", "AzureServices")
        props.setdefault("zoneRedundancy", "Disabled")
        sku = (resource.get("sku") or (ctx.existing or {})["sku"])["name"]
        resource["sku"] = {"name": sku, "tier": sku}
        resource["_repositories"] = dict((ctx.existing or {}).get("_repositories") or {})
        status, kvp = encryption_of(props)
        old_status, old_kvp = encryption_of(old)
        if status != "enabled":
            props["encryption"] = {"status": "disabled"}
            return
        kvp = {**old_kvp, **{k[0].lower() + k[1:]: v for k, v in kvp.items()}}
        kvp["identity"] = self._client_id(resource, str(kvp.get("identity") or ""))
        changed = (kvp["keyIdentifier"], kvp["identity"]) != (
            old_kvp.get("keyIdentifier"),
            old_kvp.get("identity"),
        )
        if old_status == "enabled" and not changed:
            props["encryption"] = {"status": "enabled", "keyVaultProperties": kvp}
            return
        _, key, version = self.keyvault.resolve_key_url(kvp["keyIdentifier"])
        if version.kty not in ("RSA", "RSA-HSM"):
            raise HttpError(
                400,
                "InvalidKeyType",
                f"The key '{kvp['keyIdentifier']}' is {version.kty}: registries support RSA "
                "and RSA-HSM keys only.",
            )
        versioned = kvp["keyIdentifier"].rstrip("/").split("/")[-1] == version.version
        resolved = f"{kvp['keyIdentifier'].rsplit('/keys/', 1)[0]}/keys/{key.name}/"
        kvp["versionedKeyIdentifier"] = resolved + version.version
        kvp["keyRotationEnabled"] = not versioned
        self.check_key(resource, kvp)
        if old_status == "enabled" and kvp["versionedKeyIdentifier"] != old_kvp.get(
            "versionedKeyIdentifier"
        ):
            kvp["lastKeyRotationTimestamp"] = iso(self.keyvault.clock.now())
        props["encryption"] = {"status": "enabled", "keyVaultProperties": kvp}

    def _client_id(self, resource: dict[str, Any], identity: str) -> str:
        """The client id `identity` names: a user-assigned identity of the registry (by client
        or principal id), or `system` for the registry's system-assigned identity."""
        ident = resource.get("identity") or {}
        if not identity:
            raise HttpError(
                400,
                "InvalidParameter",
                "properties.encryption.keyVaultProperties.identity is required: the client id "
                "of a user-assigned identity of the registry.",
            )
        if identity.lower() == SYSTEM:
            if not ident.get("principalId"):
                raise HttpError(
                    400,
                    "InvalidIdentity",
                    f"Registry '{resource['name']}' has no system-assigned identity: assign it "
                    "before using it for encryption.",
                )
            return SYSTEM
        for uai in (ident.get("userAssignedIdentities") or {}).values():
            if identity in (uai.get("clientId"), uai.get("principalId")):
                return str(uai["clientId"])
        raise HttpError(
            400,
            "InvalidIdentity",
            f"Azure resource '{resource['id']}' does not have access to identity "
            f"'{identity}' Try forcibly adding the identity to the registry {resource['name']}. "
            "For more information on bring your own key, please visit 'https://aka.ms/acr/cmk'.",
        )

    def principal(self, resource: dict[str, Any], client_id: str) -> str:
        """The principal id of the identity encryption uses."""
        ident = resource.get("identity") or {}
        if client_id == SYSTEM:
            return str(ident.get("principalId"))
        for uai in (ident.get("userAssignedIdentities") or {}).values():
            if uai.get("clientId") == client_id:
                return str(uai["principalId"])
        return ""

    def check_key(self, resource: dict[str, Any], kvp: dict[str, Any]) -> None:
        """400 KeyVaultAccessForbidden unless the registry can use the key now: the key exists
        and is enabled, the vault firewall lets trusted services through, and the identity
        holds get, wrapKey and unwrapKey."""
        url = kvp["versionedKeyIdentifier"]
        try:
            vault, key, version = self.keyvault.resolve_key_url(url)
        except HttpError as exc:
            raise cmk_error(resource["id"], exc.message) from None
        if not version.enabled:
            raise cmk_error(resource["id"], f"the key '{url}' is disabled")
        denial = network_denial(vault, trusted_service=True)
        if denial:
            raise cmk_error(resource["id"], f"vault '{vault['name']}': {denial}")
        principal = self.principal(resource, kvp["identity"])
        granted = self.keyvault.effective_key_operations(vault, principal, key.name)
        missing = sorted(KEY_OPERATIONS - granted)
        if missing:
            raise cmk_error(
                resource["id"],
                f"the identity '{kvp['identity']}' (principal '{principal}') lacks key "
                f"permissions {', '.join(missing)} on vault '{vault['name']}'",
            )

    def refresh(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        status, kvp = encryption_of(resource["properties"])
        if status != "enabled" or not kvp.get("keyRotationEnabled"):
            return
        try:
            _, _, latest = self.keyvault.resolve_key_url(kvp["keyIdentifier"])
        except HttpError:
            return
        if kvp["versionedKeyIdentifier"].endswith("/" + latest.version):
            return
        if self.keyvault.clock.now() < latest.created + self.auto_rotation_seconds:
            return
        candidate = {**kvp, "versionedKeyIdentifier": kvp["keyIdentifier"].rstrip("/") + "/"}
        candidate["versionedKeyIdentifier"] += latest.version
        try:
            self.check_key(resource, candidate)
        except HttpError:
            return
        candidate["lastKeyRotationTimestamp"] = iso(self.keyvault.clock.now())
        resource["properties"]["encryption"]["keyVaultProperties"] = candidate

    def import_image(self, arm: ArmModel, resource: dict[str, Any], body: dict[str, Any]) -> None:
        """importImage: write content, which needs the key when encryption is on."""
        status, kvp = encryption_of(resource["properties"])
        if status == "enabled":
            self.check_key(resource, kvp)
        source = (body.get("source") or {}).get("sourceImage")
        if not source:
            raise HttpError(400, "InvalidParameter", "source.sourceImage is required.")
        for tag in body.get("targetTags") or [source]:
            resource["_repositories"][tag] = source


def register_types(arm: ArmModel, keyvault: KeyVaultModel) -> RegistryHooks:
    """Serve registries: create 201 and update 200 with an Azure-AsyncOperation monitor,
    delete 202 with a Location monitor; `importImage` answers 200 when done."""
    hooks = RegistryHooks(keyvault)
    arm.register_type(
        TypeSpec(
            REGISTRY_TYPE,
            lro="azure-async-operation",
            create_status=201,
            update_status=200,
            delete_lro="location",
            hooks=hooks,
            actions={"importimage": hooks.import_image},
        )
    )
    return hooks
