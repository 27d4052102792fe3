"""Container registry requests, results and rules (no Prefect import): the requests of the
registry flows, the encryption status as `az acr encryption show` prints it, the registry's
request bodies, and the checks of an existing registry."""

from __future__ import annotations

from typing import Literal, Protocol

from azure.mgmt.containerregistry.models import (
    EncryptionProperty,
    IdentityProperties,
    KeyVaultProperties,
    Registry,
    RegistryProperties,
    RegistryPropertiesUpdateParameters,
    RegistryUpdateParameters,
    Sku,
    UserIdentityProperties,
)
from azure.mgmt.core.tools import resource_id
from pydantic import BaseModel, Field, model_validator

from byok.errors import InvalidRequest
from byok.key_policy import KeyRotationPolicyField
from byok.key_sources import (
    HSM_GROUP_FIELD,
    HSM_NAME_FIELD,
    KEY_STORE_FIELD,
    StoreKind,
    check_store_named,
)
from byok.key_store import KeyStore
from byok.keyvault_ids import KeyId
from byok.outcomes import PLAN_ONLY, Change, changes
from byok.parameters import AZURE_BLOCK_NAME
from byok.sdk_values import text

SYSTEM = "system"  # keyVaultProperties.identity of the registry's system-assigned identity

_BLOCK = Field(None, description=AZURE_BLOCK_NAME)
_SUB = Field(None, description="Default: the block's.")
_REGISTRY = Field(
    ..., pattern=r"^[a-zA-Z0-9]{5,50}$", description="Registry name: 5-50 letters and digits."
)
_TIMEOUT = Field(15, gt=0, description="How long to wait for grants to propagate.")
_WAIT = Field(
    False,
    description="When another run is working on the same registry: wait for it to finish "
    "(true), or fail at once with `another run is working on <registry id>` (false).",
)


class IdentityInfo(BaseModel):
    """A user-assigned managed identity."""

    id: str
    name: str
    principal_id: str
    client_id: str


class EncryptionStatus(BaseModel):
    """What `az acr encryption show` prints."""

    status: str
    key_identifier: str | None = None
    versioned_key_identifier: str | None = None
    identity: str | None = None
    key_rotation_enabled: bool | None = None
    last_key_rotation_timestamp: str | None = None


class RegistryInfo(BaseModel):
    """A registry encrypted with a customer-managed key, for flows chaining on it."""

    id: str
    name: str
    login_server: str
    key_id: str
    versioned_key_id: str
    identity_id: str | None
    identity_principal_id: str
    identity_client_id: str

    def uses_identity(self, identity_id: str) -> bool:
        """Whether its encryption uses the user-assigned identity `identity_id`."""
        return (self.identity_id or "").lower() == identity_id.lower()

    @property
    def follows_latest(self) -> bool:
        """Whether it has the versionless key id (picks new versions up by itself)."""
        return KeyId.parse(self.key_id).version is None


class EncryptedRegistryRequest(BaseModel):
    """A new Premium registry encrypted with a key of a purge-protected vault or of an
    activated managed HSM."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = _SUB
    resource_group: str = Field(..., description="Resource group (created if missing).")
    location: str = Field(..., description="Region of the registry, identity and key store.")
    registry_name: str = _REGISTRY
    identity_name: str = Field(..., description="User-assigned identity (created if missing).")
    key_store: StoreKind = KEY_STORE_FIELD
    vault_name: str | None = Field(
        None,
        description="Key vault (created with purge protection if missing; an existing one "
        "must have soft delete and purge protection on). Required with key_store key-vault.",
    )
    hsm_name: str | None = HSM_NAME_FIELD
    hsm_resource_group: str | None = HSM_GROUP_FIELD
    vault_rbac: bool = Field(
        False, description="A new vault uses Azure RBAC (else access policies, as the doc)."
    )
    key_name: str = Field(
        ...,
        description="RSA key (created if missing, reused if present; RSA-HSM in a managed HSM).",
    )
    key_size: Literal[2048, 3072, 4096] = Field(3072, description="RSA key size in bits.")
    automatic_rotation: bool = Field(
        True,
        description="Versionless key id: the registry follows new key versions (within an "
        "hour in Azure). Off: the versioned id, rotated by hand.",
    )
    rotation_policy: KeyRotationPolicyField = None
    propagation_timeout_minutes: float = _TIMEOUT
    wait_for_other_run: bool = _WAIT
    plan_only: bool = PLAN_ONLY

    @model_validator(mode="after")
    def _store_named(self) -> EncryptedRegistryRequest:
        check_store_named(self.key_store, self.vault_name, self.hsm_name)
        return self

    @property
    def hsm_group(self) -> str:
        """The managed HSM's resource group."""
        return self.hsm_resource_group or self.resource_group


class EncryptedRegistryResult(BaseModel):
    """What was created; other flows chain on it."""

    registry: RegistryInfo
    vault: KeyStore
    identity_id: str
    identity_principal_id: str

    @classmethod
    def of(cls, registry: RegistryInfo, vault: KeyStore) -> EncryptedRegistryResult:
        """The result for a verified registry and the store of its key."""
        return cls(
            registry=registry,
            vault=vault,
            identity_id=str(registry.identity_id),
            identity_principal_id=registry.identity_principal_id,
        )


class RegistryTemplateRequest(BaseModel):
    """The doc's ARM template: identity, access policy and registry in one deployment (the
    vault and key are made first, as the doc's previous section does)."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = _SUB
    resource_group: str = Field(..., description="Resource group (created if missing).")
    location: str = Field(..., description="Region of the group and vault.")
    registry_name: str = _REGISTRY
    identity_name: str = Field(..., description="User-assigned identity the template creates.")
    vault_name: str = Field(..., description="Key vault (access policies; created if missing).")
    key_name: str = Field(..., description="RSA key (created if missing, reused if present).")
    key_size: Literal[2048, 3072, 4096] = Field(3072, description="RSA key size in bits.")
    automatic_rotation: bool = Field(True, description="Pass the versionless key id.")
    deployment_name: str = Field("acr-cmk", description="Name of the template deployment.")
    propagation_timeout_minutes: float = _TIMEOUT
    wait_for_other_run: bool = _WAIT
    plan_only: bool = PLAN_ONLY

    def as_create_request(self) -> EncryptedRegistryRequest:
        """The same registry as the CLI path makes it (access-policy vault)."""
        return EncryptedRegistryRequest(
            **self.model_dump(exclude={"deployment_name"}), vault_rbac=False
        )

    def template_parameters(self, key_id: str) -> dict[str, str]:
        """The template's parameters."""
        return {
            "registry_name": self.registry_name,
            "identity_name": self.identity_name,
            "vault_name": self.vault_name,
            "kek_id": key_id,
        }


class RegistryRequest(BaseModel):
    """An existing registry."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = _SUB
    resource_group: str = Field(..., description="Resource group of the registry.")
    registry_name: str = _REGISTRY
    plan_only: bool = PLAN_ONLY


class ChangeRegistryRequest(RegistryRequest):
    """A change to an existing registry: one run per registry at a time."""

    wait_for_other_run: bool = _WAIT


class RotateRegistryKeyRequest(ChangeRegistryRequest):
    """How to rotate: a new version of the key in use, or another key."""

    new_key_name: str | None = Field(
        None,
        description="Rotate to this key (created if missing) in the vault of the current key; "
        "empty: a new version of the current key.",
    )
    identity: str = Field(
        "current",
        description="'current' keeps the identity encryption uses; 'system' uses the "
        "registry's system-assigned identity; otherwise the name of a user-assigned identity "
        "assigned to the registry. It must already hold the key permissions.",
    )
    timeout_minutes: float = Field(
        90, gt=0, description="How long to wait for the registry to report the new version."
    )
    poll_seconds: float = Field(30, gt=0, description="Seconds between checks.")
    rotation_id: str | None = Field(
        None,
        description="Names this rotation: a re-run with the same value reuses the key version "
        "it made (tagged `byok-rotation=<value>`) instead of making another. Empty: this flow "
        "run's id; a version newer than the registry's is reused in any case.",
    )


class RevokeRestoreRequest(ChangeRegistryRequest):
    """Prove revocation and recovery of a registry's key access."""

    propagation_timeout_minutes: float = _TIMEOUT


class RevokeRestoreResult(BaseModel):
    """What the registry's data operation answered while revoked and after restoring."""

    revoked: str
    restored: str


class FirewallRequest(ChangeRegistryRequest):
    """The Key Vault firewall scenario: system identity, bypass for trusted services, and a
    rotation to a key in the firewalled vault."""

    vault_name: str = Field(..., description="The vault to put behind its firewall.")
    vault_resource_group: str | None = Field(None, description="Default: the registry's.")
    key_name: str = Field(..., description="Key in that vault to rotate to (created if missing).")
    key_size: Literal[2048, 3072, 4096] = Field(3072, description="RSA key size in bits.")
    operator_ip_rules: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR ranges this tool calls the vault from (kept in the "
        "vault's firewall so keys can still be managed).",
    )
    propagation_timeout_minutes: float = _TIMEOUT


class SwitchIdentityRequest(ChangeRegistryRequest):
    """Troubleshooting: move encryption to another user-assigned identity, then remove the
    old one (removing an identity encryption still uses fails)."""

    old_identity_id: str = Field(..., description="Resource id of the identity to remove.")
    new_identity_name: str = Field(
        ..., description="User-assigned identity to use instead (created if missing)."
    )
    location: str = Field(..., description="Region of a new identity.")
    propagation_timeout_minutes: float = _TIMEOUT


class NamesRegistry(Protocol):
    """A request naming a registry."""

    subscription_id: str | None
    resource_group: str
    registry_name: str


def registry_id(subscription_id: str, resource_group: str, name: str) -> str:
    """The resource id of a registry."""
    return resource_id(
        subscription=subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.ContainerRegistry",
        type="registries",
        name=name,
    )


def deployment_id(subscription_id: str, resource_group: str, name: str) -> str:
    """A resource group's deployment's id."""
    return resource_id(
        subscription=subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.Resources",
        type="deployments",
        name=name,
    )


def identity_note(identity_id: str, assigned: bool) -> str:
    """A summary's note on one user-assigned identity of a registry."""
    return f"identity {identity_id.rsplit('/', 1)[-1]} {'assigned' if assigned else 'removed'}"


def target_registry(request: NamesRegistry, default_subscription: str) -> str:
    """The id of the registry a request names (the block's subscription by default)."""
    return registry_id(
        request.subscription_id or default_subscription,
        request.resource_group,
        request.registry_name,
    )


def encryption_status(registry: Registry) -> EncryptionStatus:
    """The registry's encryption as `az acr encryption show` reports it."""
    encryption = registry.encryption
    kvp = encryption.key_vault_properties if encryption else None
    if kvp is None:
        return EncryptionStatus(status=text(encryption.status) if encryption else "disabled")
    stamp = kvp.last_key_rotation_timestamp
    return EncryptionStatus(
        status=text(encryption.status),
        key_identifier=kvp.key_identifier,
        versioned_key_identifier=kvp.versioned_key_identifier,
        identity=kvp.identity,
        key_rotation_enabled=kvp.key_rotation_enabled,
        last_key_rotation_timestamp=stamp.isoformat() if stamp else None,
    )


def encryption_identity(registry: Registry) -> tuple[str | None, str]:
    """The (user-assigned identity id or None for the system identity, principal id) of the
    identity the registry's encryption uses."""
    client_id = encryption_status(registry).identity or ""
    identity = registry.identity
    if client_id == SYSTEM:
        return None, str(identity.principal_id) if identity else ""
    for uid, uai in (identity.user_assigned_identities or {}).items() if identity else []:
        if uai.client_id == client_id:
            return uid, str(uai.principal_id)
    raise InvalidRequest(
        "registry_name", registry.name, f"its encryption identity '{client_id}' is not assigned"
    )


def rotation_identity(registry: Registry, requested: str) -> str:
    """The `keyVaultProperties.identity` a rotation uses: the current one, `system`, or the
    client id of the user-assigned identity named `requested`."""
    if requested == "current":
        return str(encryption_status(registry).identity)
    identity = registry.identity
    if requested == SYSTEM:
        if not (identity and identity.principal_id):
            raise InvalidRequest(
                "identity", SYSTEM, "the registry has no system-assigned identity; enable it"
            )
        return SYSTEM
    for uid, uai in (identity.user_assigned_identities or {}).items() if identity else []:
        if uid.rsplit("/", 1)[-1].lower() == requested.lower():
            return str(uai.client_id)
    raise InvalidRequest("identity", requested, "not a user-assigned identity of the registry")


def registry_key_state(registry: Registry, versioned_key_id: str) -> str:
    """How far the registry is in moving to `versioned_key_id`: its encryption status when
    not 'enabled', else 'old key' or 'done'."""
    status = encryption_status(registry)
    if status.status != "enabled":
        return str(status.status)
    return "done" if status.versioned_key_identifier == versioned_key_id else "old key"


def registry_info(registry: Registry) -> RegistryInfo:
    """The typed summary of an encrypted registry."""
    status = encryption_status(registry)
    identity_id, principal = encryption_identity(registry)
    return RegistryInfo(
        id=str(registry.id),
        name=str(registry.name),
        login_server=str(registry.login_server),
        key_id=str(status.key_identifier),
        versioned_key_id=str(status.versioned_key_identifier),
        identity_id=identity_id,
        identity_principal_id=principal,
        identity_client_id=str(status.identity),
    )


def check_existing_registry(registry: Registry, key_id: str | None = None) -> None:
    """Encryption can only be set at creation: an existing registry must already be a
    Premium registry encrypted with the requested key (any key when `key_id` is None)."""
    status = encryption_status(registry)
    if status.status != "enabled":
        raise InvalidRequest(
            "registry_name",
            registry.name,
            "the registry exists without customer-managed-key encryption, which can only be "
            "enabled when a registry is created; choose a new registry name",
        )
    if key_id and (status.key_identifier or "").rstrip("/") != key_id.rstrip("/"):
        raise InvalidRequest(
            "registry_name",
            registry.name,
            f"the registry exists encrypted with '{status.key_identifier}', not '{key_id}'; "
            "use the rotate flow to change its key",
        )


def status_markdown(name: str, status: EncryptionStatus) -> str:
    """The encryption status as a markdown table."""
    rows = "\n".join(f"| {field} | `{value}` |" for field, value in status.model_dump().items())
    return f"# Encryption of registry `{name}`\n\n| Field | Value |\n|---|---|\n{rows}\n"


def encryption(key_id: str, identity: str) -> EncryptionProperty:
    """Customer-managed-key encryption with `key_id` through `identity` (a client id or
    `system`)."""
    return EncryptionProperty(
        status="enabled",
        key_vault_properties=KeyVaultProperties(key_identifier=key_id, identity=identity),
    )


def encrypted_registry_body(location: str, identity: IdentityInfo, key_id: str) -> Registry:
    """`az acr create --sku Premium --identity … --key-encryption-key …`."""
    return Registry(
        location=location,
        sku=Sku(name="Premium"),
        identity=IdentityProperties(
            type="UserAssigned", user_assigned_identities={identity.id: UserIdentityProperties()}
        ),
        properties=RegistryProperties(encryption=encryption(key_id, identity.client_id)),
    )


def key_changes(current: EncryptionStatus, key_id: str, identity: str | None) -> list[Change]:
    """What `az acr encryption rotate-key` to `key_id` through `identity` (None: the one in
    use) changes."""
    return changes(
        {"keyIdentifier": current.key_identifier, "identity": current.identity},
        {"keyIdentifier": key_id, "identity": identity or current.identity},
    )


def key_update(key_id: str, identity: str) -> RegistryUpdateParameters:
    """`az acr encryption rotate-key --key-encryption-key … --identity …`."""
    return RegistryUpdateParameters(
        properties=RegistryPropertiesUpdateParameters(encryption=encryption(key_id, identity))
    )


def identities(system: bool, user_assigned: list[str]) -> IdentityProperties:
    """The registry's identities: the system-assigned one or not, and the user-assigned."""
    kinds = [k for k, on in (("SystemAssigned", system), ("UserAssigned", user_assigned)) if on]
    return IdentityProperties(
        type=", ".join(kinds) or "None",
        user_assigned_identities={u: UserIdentityProperties() for u in user_assigned} or None,
    )
