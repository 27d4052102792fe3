"""Key Vault state: the management-plane vault resource (Microsoft.KeyVault/vaults) and
each vault's keys, served on an origin of its own. Other key stores on the same data plane
(managed HSMs) keep their keys here too and bring their own `StoreRules` (token audience,
who may use a key, key types)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from emulator.clock import Clock
from emulator.http import HttpError
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.authorization.models import allowed_key_operations
from emulator.services.authorization.roles import ALL_KEY_OPERATIONS, KEY_DATA_ACTIONS
from emulator.services.entra.models import Principal
from emulator.services.keyvault import crypto
from emulator.services.keyvault.rotation import expiry_of, next_rotation
from emulator.services.keyvault.throttling import VaultThrottle

VAULT_TYPE = "Microsoft.KeyVault/vaults"
_KEY_URL = re.compile(
    r"^https://(?P<host>[^/:]+)(:(?P<port>\d+))?/keys/(?P<name>[^/]+)(/(?P<version>[^/]+))?/?$",
    re.IGNORECASE,
)
_VAULT_NAME = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
# From this api-version on, new vaults use Azure RBAC unless told otherwise.
RBAC_DEFAULT_SINCE = "2026-02-01"
# Every emulator client calls from loopback: the address vault firewall rules see.
LOOPBACK_CLIENT = "127.0.0.1"
# Access-policy key permissions: every key operation, or "all".
KEY_PERMISSIONS = ALL_KEY_OPERATIONS | {"all"}


class StoreRules(Protocol):
    """What differs between key stores served on Key Vault's data plane (vaults, managed
    HSMs): the token audience, who may use a key, which key types it holds."""

    audience: str

    def key_operations(
        self, resource: dict[str, Any], object_id: str, key_name: str | None
    ) -> set[str]:
        """Key operations (lower case) in effect for a principal on a key."""
        ...

    def authorize(
        self, resource: dict[str, Any], principal: Principal, operation: str, key_name: str | None
    ) -> None:
        """Raise HttpError unless the caller may do `operation` on the key."""
        ...

    def check_key_type(self, resource: dict[str, Any], kty: str) -> None:
        """Raise HttpError for a key type the store does not hold."""
        ...


VAULT_AUDIENCE = "https://vault.azure.net"


@dataclass
class KeyVersion:
    """One version of a key."""

    version: str
    kty: str
    material: crypto.PrivateKey
    key_ops: list[str]
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    updated: int = field(default_factory=lambda: int(time.time()))
    exp: int | None = None
    nbf: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    exportable: bool = False
    release_policy: dict[str, Any] | None = None  # contentType, data (base64url), immutable


@dataclass
class StoredKey:
    """A key: its versions, oldest first, and its soft-delete state."""

    name: str
    versions: list[KeyVersion] = field(default_factory=list)
    deleted_date: int | None = None
    rotation_policy: dict[str, Any] | None = None

    def version(self, version: str | None) -> KeyVersion:
        """A version by id, or the latest for None/empty."""
        if not version:
            return self.versions[-1]
        for v in self.versions:
            if v.version == version:
                return v
        raise key_not_found(f"{self.name}/{version}")


@dataclass
class VaultData:
    """The data plane of one vault."""

    resource_id: str
    name: str
    port: int
    keys: dict[str, StoredKey] = field(default_factory=dict)


def recovery_level(vault_properties: dict[str, Any]) -> tuple[str, int]:
    """The `recoveryLevel` and `recoverableDays` of a vault's objects: 'Purgeable' unless
    purge protection is on; 'Customized…' when the retention is shorter than 90 days.
    https://learn.microsoft.com/javascript/api/@azure/keyvault-keys/knowndeletionrecoverylevel"""
    days = int(vault_properties.get("softDeleteRetentionInDays") or 90)
    protected = vault_properties.get("enablePurgeProtection")
    level = "Recoverable" if protected else "Recoverable+Purgeable"
    return ("Customized" + level if days < 90 else level), days


def check_hardware_key(vault_properties: dict[str, Any], kty: str) -> None:
    """HSM-protected keys (RSA-HSM, EC-HSM) need a Premium vault; a standard vault answers
    400 "Hardware key operation not allowed on standard vault"
    (https://github.com/Azure/azure-sdk-for-net/issues/6551)."""
    sku = str((vault_properties.get("sku") or {}).get("name") or "standard").lower()
    if kty.upper().endswith("-HSM") and sku == "standard":
        raise HttpError(
            400, "BadParameter", "Hardware key operation not allowed on standard vault."
        )


def key_not_found(name: str) -> HttpError:
    """Key Vault's 404 for a key."""
    return HttpError(
        404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault."
    )


@dataclass
class DeletedVault:
    """A soft-deleted vault: its last state; its keys stay on its origin until purged."""

    resource: dict[str, Any]
    deleted_at: float = field(default_factory=time.time)

    @property
    def subscription(self) -> str:
        """The subscription the vault was in."""
        return ids.subscription_of(self.resource["id"])

    def to_json(self) -> dict[str, Any]:
        """The deleted vault as `deletedVaults` serves it."""
        props = self.resource["properties"]
        name, location = self.resource["name"], self.resource["location"]
        days = recovery_level(props)[1]
        return {
            "id": f"/subscriptions/{self.subscription}/providers/Microsoft.KeyVault/locations/"
            f"{location}/deletedVaults/{name}",
            "name": name,
            "type": "Microsoft.KeyVault/deletedVaults",
            "properties": {
                "vaultId": self.resource["id"],
                "location": location,
                "deletionDate": _iso(self.deleted_at),
                "scheduledPurgeDate": _iso(self.deleted_at + days * 86400),
                "tags": self.resource.get("tags") or {},
                "purgeProtectionEnabled": bool(props.get("enablePurgeProtection")),
            },
        }


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


class KeyVaultModel:
    """Every vault's keys, and the access checks against the vault's policies or roles.
    Deleted vaults are soft-deleted (Azure made soft delete mandatory): listed, recovered
    with `createMode: recover`, purged; their names are held until then
    (https://learn.microsoft.com/azure/key-vault/general/key-vault-recovery)."""

    def __init__(
        self, arm: ArmModel, listen: Callable[[], int], unlisten: Callable[[int], None]
    ) -> None:
        self.arm = arm
        self._listen, self._unlisten = listen, unlisten
        self.lock = threading.RLock()
        self.clock = Clock()  # the emulator's clock: every time-based behaviour reads it
        self.vaults: dict[int, VaultData] = {}  # by port
        self.deleted_vaults: dict[str, DeletedVault] = {}  # by lower-case name
        self.store_rules: dict[str, StoreRules] = {}  # other key stores, by lower-case type
        self.throttle: VaultThrottle | None = None  # on with ARM's (the emulator's switch)

    def rules_of(self, resource: dict[str, Any]) -> StoreRules | None:
        """The rules of a key store that is not a vault (a managed HSM), or None."""
        return self.store_rules.get(resource["type"].lower())

    def draw(self, resource: dict[str, Any], cost: float) -> None:
        """Spend `cost` of a vault's throttling windows and its subscription's (when on;
        managed HSMs are not throttled), or refuse the transaction (`Throttled`)."""
        if self.throttle is not None and self.rules_of(resource) is None:
            subscription = ids.subscription_of(resource["id"])
            self.throttle.take(resource["id"], subscription, resource["location"], cost)

    def audience(self, resource: dict[str, Any]) -> str:
        """The resource a key store's tokens are for (its challenge names it)."""
        rules = self.rules_of(resource)
        return rules.audience if rules else VAULT_AUDIENCE

    def check_key_type(self, resource: dict[str, Any], kty: str) -> None:
        """Refuse a key type the store does not hold (vaults: no symmetric keys, HSM types
        in Premium only)."""
        rules = self.rules_of(resource)
        if rules:
            rules.check_key_type(resource, kty)
            return
        if kty.lower().startswith("oct"):
            raise HttpError(
                400,
                "BadParameter",
                f"The key type {kty!r} is not supported by vaults: symmetric keys are held by "
                "managed HSMs only (https://learn.microsoft.com/azure/key-vault/keys/about-keys).",
            )
        check_hardware_key(resource["properties"], kty)

    def deleted_vault(self, subscription: str, name: str, location: str | None) -> DeletedVault:
        """A soft-deleted vault of a subscription (in `location`, if given), or 404."""
        with self.lock:
            found = self.deleted_vaults.get(name.lower())
        if (
            found is None
            or found.subscription.lower() != subscription.lower()
            or (location is not None and found.resource["location"] != location.lower())
        ):
            raise HttpError(
                404,
                "ResourceNotFound",
                f"The deleted vault '{name}' was not found in subscription '{subscription}'.",
            )
        return found

    def list_deleted(self, subscription: str) -> list[DeletedVault]:
        """The soft-deleted vaults of a subscription, by name."""
        with self.lock:
            found = [
                d
                for d in self.deleted_vaults.values()
                if d.subscription.lower() == subscription.lower()
            ]
        return sorted(found, key=lambda d: d.resource["name"].lower())

    def purge(self, subscription: str, location: str, name: str) -> None:
        """Purge a soft-deleted vault: its name is free again. With purge protection Azure
        answers "Operation 'DeletedVaultPurge' is not allowed."
        (https://github.com/microsoft/AzureTRE/issues/1446)."""
        deleted = self.deleted_vault(subscription, name, location)
        if deleted.resource["properties"].get("enablePurgeProtection"):
            raise HttpError(
                405, "MethodNotAllowed", "Operation 'DeletedVaultPurge' is not allowed."
            )
        with self.lock:
            self.deleted_vaults.pop(name.lower(), None)
        self.close_vault(deleted.resource["id"])

    def open_vault(self, resource_id: str, name: str) -> VaultData:
        """Give a new vault its own origin."""
        with self.lock:
            for data in self.vaults.values():
                if data.resource_id.lower() == resource_id.lower():
                    return data
            data = VaultData(resource_id, name, self._listen())
            self.vaults[data.port] = data
            return data

    def close_vault(self, resource_id: str) -> None:
        """Stop serving a deleted vault."""
        with self.lock:
            for port, data in list(self.vaults.items()):
                if data.resource_id.lower() == resource_id.lower():
                    del self.vaults[port]
                    self._unlisten(port)

    def vault_for_port(self, port: int) -> tuple[VaultData, dict[str, Any]]:
        """The vault served on `port` and its ARM resource."""
        with self.lock:
            data = self.vaults.get(port)
        resource = self.arm.get(data.resource_id) if data else None
        if data is None or resource is None:
            raise HttpError(404, "VaultNotFound", "No vault is served on this origin.")
        return data, resource

    def check_release(self, resource: dict[str, Any], version: KeyVersion) -> None:
        """Secure key release: an exportable key needs a release policy and the reverse
        (AKV.SKR.1004, https://github.com/Azure/azure-sdk-for-python/issues/29945; AKV.SKR.1005,
        https://github.com/Azure/azure-cli/issues/28288), exportable only in Premium vaults and
        managed HSMs (AKV.SKR.1001, https://github.com/Azure/azure-sdk-for-java/pull/23276);
        the policy is base64url JSON (https://learn.microsoft.com/azure/key-vault/keys/
        policy-grammar)."""
        policy = version.release_policy
        if version.exportable and not policy:
            raise HttpError(
                400, "BadParameter", "AKV.SKR.1004: Exportable keys must have release policy."
            )
        if policy and not version.exportable:
            raise HttpError(
                400,
                "BadParameter",
                "AKV.SKR.1005: Non-exportable keys must not have release policy.",
            )
        sku = str((resource["properties"].get("sku") or {}).get("name") or "").lower()
        if version.exportable and not self.rules_of(resource) and sku != "premium":
            raise HttpError(
                400,
                "BadParameter",
                "AKV.SKR.1001: The exportable attribute is only supported with premium vaults "
                "and API version >= '7.3-preview'.",
            )
        if policy:
            try:
                json.loads(crypto.unb64url(str(policy.get("data") or "")))
            except ValueError:
                raise HttpError(
                    400,
                    "BadParameter",
                    "release_policy.data: not a base64url-encoded JSON release policy.",
                ) from None

    def effective_key_operations(
        self, resource: dict[str, Any], object_id: str, key_name: str | None = None
    ) -> set[str]:
        """Key operations (lower case) granted to a principal and already in effect: by
        access policies, or by role assignments on RBAC vaults (on the vault or above, or on
        key `key_name`: Azure RBAC scopes reach single keys,
        https://learn.microsoft.com/azure/key-vault/general/rbac-guide); on a managed HSM by
        its local RBAC, on `key_name` (None: HSM-wide grants only)."""
        rules = self.rules_of(resource)
        if rules:
            return rules.key_operations(resource, object_id, key_name)
        if resource["properties"].get("enableRbacAuthorization"):
            scope = f"{resource['id']}/keys/{key_name}" if key_name else resource["id"]
            return allowed_key_operations(self.arm, scope, object_id)
        if time.monotonic() < resource.get("_access_effective", {}).get(object_id, 0.0):
            return set()
        granted: set[str] = set()
        for policy in resource["properties"].get("accessPolicies") or []:
            if policy.get("objectId") == object_id:
                keys = (policy.get("permissions") or {}).get("keys") or []
                granted |= {p.lower() for p in keys}
        return set(KEY_PERMISSIONS) if "all" in granted else granted

    def authorize(
        self,
        resource: dict[str, Any],
        principal: Principal,
        operation: str,
        key_name: str | None = None,
    ) -> None:
        """403 unless `operation` on keys (on `key_name`) is granted to the caller and in
        effect."""
        rules = self.rules_of(resource)
        if rules:
            rules.authorize(resource, principal, operation, key_name)
            return
        op = operation.lower()
        if op in self.effective_key_operations(resource, principal.object_id, key_name):
            return
        if resource["properties"].get("enableRbacAuthorization"):
            raise HttpError(
                403,
                "Forbidden",
                f"Caller is not authorized to perform action on resource. Action: "
                f"'{KEY_DATA_ACTIONS[op]}' Caller: appid={principal.client_id};"
                f"oid={principal.object_id} Vault: {resource['name']}",
                inner="ForbiddenByRbac",
            )
        raise HttpError(
            403,
            "Forbidden",
            f"The user, group or application 'appid={principal.client_id};oid="
            f"{principal.object_id}' does not have keys {op} permission on key vault "
            f"'{resource['name']}'.",
            inner="AccessDenied",
        )

    def resolve_key_url(self, key_url: str) -> tuple[dict[str, Any], StoredKey, KeyVersion]:
        """The vault resource, key and version a key URL names (versionless: the latest);
        HttpError 400 naming the URL when it does not resolve."""
        match = _KEY_URL.match(key_url or "")
        if not match:
            raise HttpError(
                400,
                "InvalidParameter",
                f"'{key_url}' is not a Key Vault key URL "
                "(https://<vault>/keys/<name>[/<version>]).",
            )
        with self.lock:
            data = self.vaults.get(int(match["port"] or 443))
        resource = self.arm.get(data.resource_id) if data else None
        key = data.keys.get(match["name"].lower()) if data else None
        if data is None or resource is None or key is None or key.deleted_date is not None:
            raise HttpError(400, "KeyVaultKeyNotFound", f"The key '{key_url}' was not found.")
        self.rotate_due(key)
        try:
            version = key.version(match["version"])
        except HttpError:
            raise HttpError(
                400, "KeyVaultKeyNotFound", f"The key version '{key_url}' was not found."
            ) from None
        return resource, key, version

    def new_version(
        self, kty: str, material: crypto.PrivateKey, body: dict[str, Any], at: float | None = None
    ) -> KeyVersion:
        """A key version from a create/import request body, created now (or `at`) on the
        emulator's clock."""
        attributes = body.get("attributes") or {}
        default_ops = (
            ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
            if kty.startswith(("RSA", "oct"))
            else ["sign", "verify"]
        )
        created = int(self.clock.now() if at is None else at)
        return KeyVersion(
            version=secrets.token_hex(16),
            kty=kty,
            material=material,
            key_ops=list(body.get("key_ops") or default_ops),
            enabled=attributes.get("enabled", True),
            created=created,
            updated=created,
            exp=attributes.get("exp"),
            nbf=attributes.get("nbf"),
            tags=dict(body.get("tags") or {}),
            exportable=bool(attributes.get("exportable", False)),
            release_policy=body.get("release_policy"),
        )

    def rotated_version(self, key: StoredKey, at: float | None = None) -> KeyVersion:
        """A new version of `key` like its latest (type, size, operations, tags), expiring
        as its rotation policy says; appended to the key."""
        latest = key.versions[-1]
        material = crypto.generate_like(latest.material, latest.kty)
        v = self.new_version(
            latest.kty,
            material,
            {
                "key_ops": latest.key_ops,
                "tags": latest.tags,
                "attributes": {"exportable": latest.exportable},
                "release_policy": latest.release_policy,
            },
            at,
        )
        v.exp = expiry_of(key.rotation_policy, v.created)
        key.versions.append(v)
        return v

    def rotate_due(self, key: StoredKey) -> None:
        """Key Vault's auto-rotation, caught up to the emulator's clock: each version the
        key's rotation policy has made by now, created at the time it was due."""
        with self.lock:
            now = self.clock.now()
            while key.deleted_date is None:
                latest = key.versions[-1]
                due = next_rotation(key.rotation_policy, latest.created, latest.exp)
                if due is None or due > now:
                    return
                self.rotated_version(key, due)


class VaultHooks(TypeHooks):
    """Vault rules of current Azure, and the vault's data-plane origin."""

    def __init__(self, keyvault: KeyVaultModel) -> None:
        self.keyvault = keyvault

    def validate(self, ctx: PutContext) -> None:
        name = ctx.rid.name
        if not _VAULT_NAME.match(name):
            raise HttpError(
                400,
                "VaultNameNotValid",
                f"The vault name '{name}' is invalid: 3-24 characters, letters, digits and "
                "single hyphens, starting with a letter and ending with a letter or digit.",
            )
        props = ctx.body.get("properties") or {}
        old = (ctx.existing or {}).get("properties") or {}
        if not props.get("tenantId") and not old.get("tenantId"):
            raise HttpError(400, "BadRequest", "The property 'tenantId' is required.")
        if not props.get("sku") and not old.get("sku"):
            raise HttpError(400, "BadRequest", "The property 'sku' is required.")
        if props.get("enableSoftDelete") is False:
            raise HttpError(
                400,
                "BadRequest",
                'The property "enableSoftDelete" cannot be set to false: soft delete is '
                "mandatory for key vaults.",
            )
        if props.get("enablePurgeProtection") is False:
            raise HttpError(
                400,
                "BadRequest",
                'The property "enablePurgeProtection" cannot be set to false. Omit it, or '
                "set it to true (purge protection cannot be disabled once enabled).",
            )
        for policy in props.get("accessPolicies") or []:
            _check_policy(policy)
        _check_network_acls(props.get("networkAcls"))
        self._check_deleted(ctx, name, props.get("createMode"))
        with ctx.arm.lock:
            for resource in ctx.arm.resources.values():
                if (
                    resource["type"] == VAULT_TYPE
                    and resource["name"].lower() == name.lower()
                    and resource["id"].lower() != ctx.rid.id().lower()
                ):
                    raise HttpError(
                        409,
                        "VaultAlreadyExists",
                        f"The vault name '{name}' is already in use. Vault names are globally "
                        "unique.",
                    )

    def _check_deleted(self, ctx: PutContext, name: str, create_mode: str | None) -> None:
        """A deleted vault's name is held: 409 unless the request recovers it
        (https://github.com/Azure/azure-cli/issues/29115); recovering a vault that is not
        deleted is refused (https://github.com/hashicorp/terraform-provider-azurerm/issues/
        12972)."""
        with self.keyvault.lock:
            deleted = self.keyvault.deleted_vaults.get(name.lower())
        recover = str(create_mode or "").lower() == "recover"
        if deleted is None and recover and ctx.existing is None:
            raise HttpError(
                400,
                "SoftDeletedVaultDoesNotExist",
                "A soft deleted vault with the given name does not exist. Ensure that the name "
                "for the vault that is being attempted to recover is in a recoverable state. "
                "For more information on soft delete please follow this link "
                "https://go.microsoft.com/fwlink/?linkid=2149745",
            )
        if deleted is None:
            return
        if not recover:
            raise HttpError(
                409,
                "ConflictError",
                "A vault with the same name already exists in deleted state. You need to either "
                "recover or purge existing key vault. Follow this link "
                "https://go.microsoft.com/fwlink/?linkid=2149745 for more information on soft "
                "delete.",
            )
        if deleted.resource["id"].lower() != ctx.rid.id().lower():
            raise HttpError(
                400,
                "BadRequest",
                f"The deleted vault '{name}' was '{deleted.resource['id']}'; it can only be "
                "recovered there.",
            )

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        old = (ctx.existing or {}).get("properties") or {}
        if str(resource["properties"].pop("createMode", "") or "").lower() == "recover":
            with self.keyvault.lock:
                deleted = self.keyvault.deleted_vaults.pop(ctx.rid.name.lower(), None)
            if deleted is not None:
                old = deleted.resource["properties"]
                resource["tags"] = resource.get("tags") or deleted.resource.get("tags") or {}
        props = resource["properties"] = {**old, **resource["properties"]}
        props.setdefault("enableSoftDelete", True)
        props.setdefault("softDeleteRetentionInDays", 90)
        props.setdefault("enableRbacAuthorization", ctx.api_version >= RBAC_DEFAULT_SINCE)
        props.setdefault("accessPolicies", [])
        props.setdefault("enabledForDeployment", False)
        props.setdefault("enabledForDiskEncryption", False)
        props.setdefault("enabledForTemplateDeployment", False)
        props.setdefault("publicNetworkAccess", "Enabled")
        data = self.keyvault.open_vault(resource["id"], resource["name"])
        props["vaultUri"] = f"https://127.0.0.1:{data.port}/"
        previous = (ctx.existing or {}).get("_access_effective", {})
        resource["_access_effective"] = dict(previous)
        record_policy_changes(
            ctx.arm, resource, old.get("accessPolicies") or [], props["accessPolicies"]
        )

    def deleted(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        with self.keyvault.lock:
            self.keyvault.deleted_vaults[resource["name"].lower()] = DeletedVault(
                {k: v for k, v in resource.items() if not k.startswith("_")}
            )


def _check_network_acls(acls: dict[str, Any] | None) -> None:
    """networkAcls: defaultAction Allow|Deny, bypass AzureServices|None, valid ipRules."""
    if not acls:
        return
    for name, allowed in (
        ("defaultAction", ("Allow", "Deny")),
        ("bypass", ("AzureServices", "None")),
    ):
        value = acls.get(name)
        if value is not None and value not in allowed:
            raise HttpError(
                400,
                "BadRequest",
                f"properties.networkAcls.{name} '{value}' is not one of {', '.join(allowed)}.",
            )
    for rule in acls.get("ipRules") or []:
        try:
            ipaddress.ip_network(str(rule.get("value")), strict=False)
        except ValueError:
            raise HttpError(
                400, "BadRequest", f"'{rule.get('value')}' is not an IPv4 address or CIDR range."
            ) from None


# The network rules of a vault (or managed HSM) data plane
# (https://learn.microsoft.com/azure/key-vault/general/network-security). publicNetworkAccess
# Disabled: "all traffic except private endpoint traffic and that that originates from trusted
# services will be blocked. This will override the set firewall rules" (the REST spec's text of
# the property: https://learn.microsoft.com/dotnet/api/azure.provisioning.keyvault.
# keyvaultproperties.publicnetworkaccess); networkAcls defaultAction Deny lets through the
# addresses of ipRules and, with bypass AzureServices (the default when unset), trusted
# services. The emulator reads bypass None as closing the trusted-service path in both cases.
# Callers: the SDK clients are a public-network caller at LOOPBACK_CLIENT; what the emulator
# does for a service (a disk encryption set's or registry's key use) is a trusted service;
# ARM's own key reads (management plane) pass whatever the rules say
# (https://github.com/MicrosoftDocs/azure-docs/issues/68668).


def public_access_disabled(resource: dict[str, Any]) -> bool:
    """Whether the store refuses every public-network caller (publicNetworkAccess Disabled)."""
    return str(resource["properties"].get("publicNetworkAccess") or "").lower() == "disabled"


def network_denial(
    resource: dict[str, Any], client_ip: str | None = None, trusted_service: bool = False
) -> str | None:
    """Why the store's network rules refuse a caller (None when they let it through): a
    trusted Azure service passes unless bypass is None, a public client only when public
    access is enabled and the firewall allows all or its address is in ipRules."""
    acls = resource["properties"].get("networkAcls") or {}
    disabled = public_access_disabled(resource)
    if trusted_service:
        if acls.get("bypass", "AzureServices") == "AzureServices":
            return None
        if disabled:
            return "public network access is disabled and trusted services may not bypass it"
        if acls.get("defaultAction", "Allow") != "Deny":
            return None
        return "the vault firewall denies by default and does not let trusted services bypass it"
    if disabled:
        return "public network access is disabled"
    if acls.get("defaultAction", "Allow") != "Deny":
        return None
    address = ipaddress.ip_address(client_ip or LOOPBACK_CLIENT)
    for rule in acls.get("ipRules") or []:
        if address in ipaddress.ip_network(str(rule["value"]), strict=False):
            return None
    return f"client address {address} is not allowed by the vault firewall"


def network_refusal(
    resource: dict[str, Any], principal: Principal, client_ip: str | None = None
) -> HttpError | None:
    """Key Vault's 403 to a public-network caller its network rules refuse, as Key Vault
    words it: ForbiddenByConnection when public access is disabled
    (https://github.com/microsoft/multimodal-ai/issues/171, https://github.com/Azure/
    secrets-store-csi-driver-provider-azure/issues/873), else ForbiddenByFirewall
    (https://github.com/hashicorp/packer-plugin-azure/issues/384)."""
    if network_denial(resource, client_ip) is None:
        return None
    who = (
        f"Caller: appid={principal.client_id};oid={principal.object_id};"
        f"iss=https://sts.windows.net/{principal.tenant_id}/\r\n"
        f"Vault: {resource['name']};location={resource.get('location', '')}"
    )
    if public_access_disabled(resource):
        return HttpError(
            403,
            "Forbidden",
            "Public network access is disabled and request is not from a trusted service nor "
            f"via an approved private link.\r\n{who}",
            inner="ForbiddenByConnection",
        )
    return HttpError(
        403,
        "Forbidden",
        "Client address is not authorized and caller is not a trusted service.\r\n"
        f"Client address: {client_ip or LOOPBACK_CLIENT}\r\n{who}",
        inner="ForbiddenByFirewall",
    )


def _check_policy(policy: dict[str, Any]) -> None:
    for field_name in ("tenantId", "objectId"):
        if not policy.get(field_name):
            raise HttpError(400, "BadRequest", f"An access policy lacks '{field_name}'.")
    for perm in (policy.get("permissions") or {}).get("keys") or []:
        if perm.lower() not in KEY_PERMISSIONS:
            raise HttpError(400, "BadRequest", f"'{perm}' is not a valid key permission.")


def record_policy_changes(
    arm: ArmModel,
    resource: dict[str, Any],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
) -> None:
    """A principal whose key permissions changed gets them after the `access-grant` delay."""

    def perms(policies: list[dict[str, Any]]) -> dict[str, set[str]]:
        return {
            p["objectId"]: {k.lower() for k in (p.get("permissions") or {}).get("keys") or []}
            for p in policies
        }

    old, new = perms(before), perms(after)
    for object_id, keys in new.items():
        if keys - old.get(object_id, set()):
            resource["_access_effective"][object_id] = arm.faults.effect_time("access-grant")


def update_access_policies(
    arm: ArmModel, vault_id: str, kind: str, policies: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The accessPolicies/{add|replace|remove} operation; returns the vault's new list."""
    if kind not in ("add", "replace", "remove"):
        raise HttpError(400, "BadRequest", f"Invalid operation kind '{kind}'.")
    for policy in policies:
        _check_policy(policy)
    with arm.lock:
        vault = arm.require(vault_id)
        current = vault["properties"].get("accessPolicies") or []
        merged = {
            p["objectId"]: {**p, "permissions": dict(p.get("permissions") or {})} for p in current
        }
        for policy in policies:
            oid = policy["objectId"]
            entry = merged.setdefault(oid, {**policy, "permissions": {}})
            for kind_name, wanted in (policy.get("permissions") or {}).items():
                have = list(entry["permissions"].get(kind_name) or [])
                if kind == "add":
                    have += [w for w in wanted if w.lower() not in {h.lower() for h in have}]
                elif kind == "replace":
                    have = list(wanted)
                else:
                    have = [h for h in have if h.lower() not in {w.lower() for w in wanted}]
                entry["permissions"][kind_name] = have
            if not any(entry["permissions"].values()):
                merged.pop(oid)
        new = list(merged.values())
        record_policy_changes(arm, vault, current, new)
        vault["properties"]["accessPolicies"] = new
        return new


def register_types(arm: ArmModel, keyvault: KeyVaultModel) -> None:
    """Serve vaults: create polls the vault's provisioningState (RegisteringDns → Succeeded),
    update (PATCH) and delete answer synchronously, as Azure does."""
    arm.register_type(
        TypeSpec(
            VAULT_TYPE,
            lro="provisioning-state",
            create_status=201,
            patch_lro="sync",
            pending_state="RegisteringDns",
            hooks=VaultHooks(keyvault),
        )
    )
