"""Procedure B: a Premium container registry encrypted with a customer-managed key; its
template variant, encryption status, key rotation, revocation, the Key Vault firewall
scenario and the identity switch of the troubleshooting section."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

from prefect import flow, task
from pydantic import BaseModel, Field

from blocks.azure import AzureCredentials
from byok.key_policy import KeyRotationPolicyField
from byok.keyvault_ids import KeyId
from byok.parameters import parse_request
from byok.permissions import (
    IDENTITY_WRITE,
    REGISTRY_WRITE,
    ROLE_ASSIGNMENT_WRITE,
    VAULT_WRITE,
)
from byok.validation import InvalidRequest, check_name, check_rsa_key_size
from clients.azure import AzureClients
from tasks.acr import (
    SYSTEM,
    EncryptionStatus,
    RegistryInfo,
    assign_user_identity,
    check_existing_registry,
    choose_key_id,
    deploy_template,
    enable_system_identity,
    encryption_identity,
    encryption_status,
    ensure_encrypted_registry,
    ensure_user_identity,
    grant_key_access,
    probe_registry_data,
    read_registry,
    registry_id,
    remove_user_identity,
    require_encrypted_registry,
    rotate_registry_key,
    show_encryption_status,
    verify_registry_key,
    verify_version_enabled,
)
from tasks.events import emit_byok_event
from tasks.key_vault import (
    CRYPTO_SERVICE_ENCRYPTION_USER,
    SERVICE_KEY_PERMISSIONS,
    VaultInfo,
    check_existing_vault,
    check_vault_and_key,
    ensure_key,
    ensure_key_vault,
    ensure_rotation_policy,
    new_key_version,
    read_vault,
    revoke,
    set_network_rules,
    vault_for_key,
    vault_info,
)
from tasks.refusal import refuse_quietly
from tasks.resource_group import ensure_resource_group
from tasks.run_lock import resource_lock
from tasks.subscription import check_permissions, check_subscription_regions

_BLOCK = Field(..., description="Name of the saved 'BYOK Azure Credentials' block to use.")
_SUB = Field(None, description="Default: the block's.")
_REGISTRY = Field(
    ..., pattern=r"^[a-zA-Z0-9]{5,50}$", description="Registry name: 5-50 letters and digits."
)
_TIMEOUT = Field(15, gt=0, description="How long to wait for grants to propagate.")
_WAIT = Field(
    False,
    description="When another run is working on the same registry: wait for it to finish "
    "(true), or fail at once with 'another run is working on <registry id>' (false).",
)


class EncryptedRegistryRequest(BaseModel):
    """A new Premium registry encrypted with a key of a purge-protected vault."""

    azure_credentials_block: str = _BLOCK
    subscription_id: str | None = _SUB
    resource_group: str = Field(..., description="Resource group (created if missing).")
    location: str = Field(..., description="Region of the registry, identity and vault.")
    registry_name: str = _REGISTRY
    identity_name: str = Field(..., description="User-assigned identity (created if missing).")
    vault_name: str = Field(
        ...,
        description="Key vault (created with purge protection if missing; an existing one "
        "must have soft delete and purge protection on).",
    )
    vault_rbac: bool = Field(
        False, description="A new vault uses Azure RBAC (else access policies, as the doc)."
    )
    key_name: str = Field(..., description="RSA key (created if missing, reused if present).")
    key_size: Literal[2048, 3072, 4096] = Field(3072, description="RSA key size in bits.")
    automatic_rotation: bool = Field(
        True,
        description="Versionless key id: the registry follows new key versions (within an "
        "hour in Azure). Off: the versioned id, rotated by hand.",
    )
    rotation_policy: KeyRotationPolicyField = None
    propagation_timeout_minutes: float = _TIMEOUT
    wait_for_other_run: bool = _WAIT


class EncryptedRegistryResult(BaseModel):
    """What was created; other flows chain on it."""

    registry: RegistryInfo
    vault: VaultInfo
    identity_id: str
    identity_principal_id: str


def encrypted_registry_result(registry: RegistryInfo, vault: VaultInfo) -> EncryptedRegistryResult:
    """Announce the encrypted registry (event) and build the flow's result."""
    emit_byok_event(
        "resource.encrypted",
        registry.id,
        "container-registry",
        related={"key": registry.key_id, "vault": vault.id},
    )
    return EncryptedRegistryResult(
        registry=registry,
        vault=vault,
        identity_id=str(registry.identity_id),
        identity_principal_id=registry.identity_principal_id,
    )


def _credentials(request: BaseModel) -> AzureCredentials:
    return AzureCredentials.load_saved(request.azure_credentials_block)  # type: ignore[attr-defined]


@task(name="Validate request")
def validate_create_request(
    credentials: AzureCredentials, request: EncryptedRegistryRequest
) -> None:
    """Names, an existing vault, key and registry (read-only): a bad request fails before
    anything is written."""
    check_name("resource_group", "resource_group", request.resource_group)
    check_name("key_vault", "vault_name", request.vault_name)
    check_name("key", "key_name", request.key_name)
    check_name("identity", "identity_name", request.identity_name)
    check_rsa_key_size("key_size", request.key_size)
    clients = AzureClients.of(credentials, request.subscription_id)
    check_vault_and_key(
        clients, request.resource_group, request.vault_name, request.key_name, request.location
    )
    registry = read_registry(clients, request.resource_group, request.registry_name)
    if registry is not None:
        check_existing_registry(registry)


@flow(name="create-encrypted-registry", validate_parameters=False)
@refuse_quietly
def create_encrypted_registry(request: EncryptedRegistryRequest) -> EncryptedRegistryResult:
    """Resource group → identity → vault with purge protection → grant the identity → key →
    key id (versioned or not) → Premium registry with the identity and key → verify."""
    request = parse_request(EncryptedRegistryRequest, request)
    credentials = _credentials(request)
    sub, rg, timeout = request.subscription_id, request.resource_group, _seconds(request)
    check_subscription_regions(credentials, request.subscription_id, {"location": request.location})
    validate_create_request(credentials, request)
    check_permissions(
        credentials,
        sub,
        rg,
        [IDENTITY_WRITE, VAULT_WRITE, REGISTRY_WRITE]
        + ([ROLE_ASSIGNMENT_WRITE] if request.vault_rbac else []),
        "create-encrypted-registry",
    )
    with _lock(credentials, request):
        ensure_resource_group(credentials, sub, rg, request.location)
        identity = ensure_user_identity(
            credentials, sub, rg, request.identity_name, request.location
        )
        vault = ensure_key_vault(
            credentials, sub, rg, request.vault_name, request.location, request.vault_rbac, timeout
        )
        grant_key_access(credentials, sub, vault, identity.principal_id, timeout)
        key = ensure_key(credentials, sub, vault, request.key_name, request.key_size, timeout)
        if request.rotation_policy is not None:
            ensure_rotation_policy(credentials, sub, key.versionless_id, request.rotation_policy)
        key_id = choose_key_id(key.id, request.automatic_rotation)
        ensure_encrypted_registry(
            credentials, sub, rg, request.registry_name, request.location, identity, key_id, timeout
        )
        registry = verify_registry_key(credentials, sub, rg, request.registry_name, key.id, 60, 1)
        return encrypted_registry_result(registry, vault)


def _lock(credentials: AzureCredentials, request: BaseModel) -> AbstractContextManager[None]:
    """One run per registry: the request's wait_for_other_run chooses to wait or fail fast."""
    target = registry_id(
        request.subscription_id or credentials.subscription_id,  # type: ignore[attr-defined]
        request.resource_group,  # type: ignore[attr-defined]
        request.registry_name,  # type: ignore[attr-defined]
    )
    return resource_lock(target, wait=request.wait_for_other_run)  # type: ignore[attr-defined]


def _seconds(request: BaseModel) -> float:
    return float(request.propagation_timeout_minutes) * 60  # type: ignore[attr-defined]


class RegistryTemplateRequest(BaseModel):
    """The doc's ARM template: identity, access policy and registry in one deployment (the
    vault and key are made first, as the doc's previous section does)."""

    azure_credentials_block: str = _BLOCK
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


@task(name="Validate template request")
def validate_template_request(
    credentials: AzureCredentials, request: RegistryTemplateRequest
) -> None:
    """As for the CLI path; the template's access policy needs an access-policy vault."""
    validate_create_request.fn(
        credentials,
        EncryptedRegistryRequest(
            **request.model_dump(exclude={"deployment_name"}), vault_rbac=False
        ),
    )
    clients = AzureClients.of(credentials, request.subscription_id)
    vault = read_vault(clients, request.resource_group, request.vault_name)
    if vault is not None and vault.properties.enable_rbac_authorization:
        raise InvalidRequest(
            "vault_name",
            request.vault_name,
            "the template grants access with an access policy; this vault uses Azure RBAC",
        )


@flow(name="create-encrypted-registry-from-template", validate_parameters=False)
@refuse_quietly
def create_encrypted_registry_from_template(
    request: RegistryTemplateRequest,
) -> EncryptedRegistryResult:
    """Resource group → vault → key → key id → template deployment → verify."""
    request = parse_request(RegistryTemplateRequest, request)
    credentials = _credentials(request)
    sub, rg, timeout = request.subscription_id, request.resource_group, _seconds(request)
    check_subscription_regions(credentials, request.subscription_id, {"location": request.location})
    validate_template_request(credentials, request)
    with _lock(credentials, request):
        ensure_resource_group(credentials, sub, rg, request.location)
        vault = ensure_key_vault(
            credentials, sub, rg, request.vault_name, request.location, False, timeout
        )
        key = ensure_key(credentials, sub, vault, request.key_name, request.key_size, timeout)
        key_id = choose_key_id(key.id, request.automatic_rotation)
        parameters = {
            "registry_name": request.registry_name,
            "identity_name": request.identity_name,
            "vault_name": request.vault_name,
            "kek_id": key_id,
        }
        deploy_template(credentials, sub, rg, request.deployment_name, parameters, timeout)
        registry = verify_registry_key(credentials, sub, rg, request.registry_name, key.id, 60, 1)
        return encrypted_registry_result(registry, vault)


class RegistryRequest(BaseModel):
    """An existing registry."""

    azure_credentials_block: str = _BLOCK
    subscription_id: str | None = _SUB
    resource_group: str = Field(..., description="Resource group of the registry.")
    registry_name: str = _REGISTRY


class ChangeRegistryRequest(RegistryRequest):
    """A change to an existing registry: one run per registry at a time."""

    wait_for_other_run: bool = _WAIT


@flow(name="show-registry-encryption", validate_parameters=False)
@refuse_quietly
def show_registry_encryption(request: RegistryRequest) -> EncryptionStatus:
    """`az acr encryption show`, returned and published as a markdown artifact."""
    request = parse_request(RegistryRequest, request)
    return show_encryption_status(
        _credentials(request),
        request.subscription_id,
        request.resource_group,
        request.registry_name,
    )


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
        "it made (tagged byok-rotation=<value>) instead of making another. Empty: this flow "
        "run's id; a version newer than the registry's is reused in any case.",
    )


@task(name="Validate rotation request")
def validate_rotation(
    credentials: AzureCredentials, request: RotateRegistryKeyRequest
) -> tuple[EncryptionStatus, str]:
    """The registry is encrypted; the identity resolves to a client id (or `system`)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    registry = require_encrypted_registry(clients, request.resource_group, request.registry_name)
    status = encryption_status(registry)
    if request.new_key_name:
        check_name("key", "new_key_name", request.new_key_name)
    if request.identity == "current":
        return status, str(status.identity)
    if request.identity == SYSTEM:
        if not (registry.identity and registry.identity.principal_id):
            raise InvalidRequest(
                "identity", SYSTEM, "the registry has no system-assigned identity; enable it"
            )
        return status, SYSTEM
    for uid, uai in (registry.identity.user_assigned_identities or {}).items():
        if uid.rsplit("/", 1)[-1].lower() == request.identity.lower():
            return status, str(uai.client_id)
    raise InvalidRequest(
        "identity", request.identity, "not a user-assigned identity of the registry"
    )


@flow(name="rotate-registry-key", validate_parameters=False)
@refuse_quietly
def rotate_registry_key_flow(request: RotateRegistryKeyRequest) -> EncryptionStatus:
    """New key version (or new key) → versioned registries: rotate-key with the chosen
    identity; versionless ones: wait for the pick-up → verify → old version still enabled."""
    request = parse_request(RotateRegistryKeyRequest, request)
    credentials = _credentials(request)
    with _lock(credentials, request):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        status, identity = validate_rotation(credentials, request)
        old = str(status.versioned_key_identifier)
        if request.new_key_name:
            vault = vault_for_key(AzureClients.of(credentials, sub), old)
            new = ensure_key(credentials, sub, vault, request.new_key_name, 3072, 60).id
        else:
            new = new_key_version(credentials, sub, old, request.rotation_id)
        follows = bool(status.key_rotation_enabled) and not request.new_key_name
        if not follows or identity != status.identity:
            key_id = KeyId.parse(new).versionless if status.key_rotation_enabled else new
            rotate_registry_key(credentials, sub, rg, name, key_id, identity, 15 * 60)
        timeout = request.timeout_minutes * 60
        verify_registry_key(credentials, sub, rg, name, new, timeout, request.poll_seconds)
        verify_version_enabled(credentials, sub, old)
        status = show_encryption_status(credentials, sub, rg, name)
        emit_byok_event(
            "key.rotated",
            KeyId.parse(new).versionless,
            "key",
            related={
                "container-registry": registry_id(sub or credentials.subscription_id, rg, name)
            },
            payload={"new_version": KeyId.parse(new).version},
        )
        return status


class RevokeRestoreRequest(ChangeRegistryRequest):
    """Prove revocation and recovery of a registry's key access."""

    propagation_timeout_minutes: float = _TIMEOUT


class RevokeRestoreResult(BaseModel):
    """What the registry's data operation answered while revoked and after restoring."""

    revoked: str
    restored: str


@flow(name="revoke-and-restore-registry-key", validate_parameters=False)
@refuse_quietly
def revoke_and_restore_registry_key(request: RevokeRestoreRequest) -> RevokeRestoreResult:
    """Remove the encryption identity's key access → registry data inaccessible → restore
    the access → registry data accessible again."""
    request = parse_request(RevokeRestoreRequest, request)
    credentials = _credentials(request)
    with _lock(credentials, request):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        clients = AzureClients.of(credentials, sub)
        registry = require_encrypted_registry(clients, rg, name)
        _, principal = encryption_identity(registry)
        vault = vault_for_key(clients, str(encryption_status(registry).versioned_key_identifier))
        revoke_key_access(credentials, sub, vault, principal)
        key = KeyId.parse(str(encryption_status(registry).versioned_key_identifier)).versionless
        emit_byok_event(
            "key.revoked",
            key,
            "key",
            related={"container-registry": str(registry.id)},
            payload={"principal_id": principal},
        )
        revoked = probe_registry_data.with_options(name="Prove registry data is inaccessible")(
            credentials, sub, rg, name, False, 0
        )
        grant_key_access(credentials, sub, vault, principal, _seconds(request))
        restored = probe_registry_data.with_options(name="Prove registry data is accessible")(
            credentials, sub, rg, name, True, _seconds(request)
        )
        emit_byok_event(
            "key.restored",
            key,
            "key",
            related={"container-registry": str(registry.id)},
            payload={"principal_id": principal},
        )
        return RevokeRestoreResult(revoked=revoked, restored=restored)


@task(name="Revoke key access")
def revoke_key_access(
    credentials: AzureCredentials, subscription_id: str | None, vault: VaultInfo, principal: str
) -> int:
    """`az keyvault delete-policy --object-id …` (or the role assignment on RBAC vaults)."""
    return revoke(
        AzureClients.of(credentials, subscription_id),
        vault,
        principal,
        SERVICE_KEY_PERMISSIONS,
        CRYPTO_SERVICE_ENCRYPTION_USER,
    )


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


@task(name="Enable key vault bypass", retries=2, retry_delay_seconds=1)
def allow_trusted_services(
    credentials: AzureCredentials, subscription_id: str | None, vault: VaultInfo, ips: list[str]
) -> bool:
    """Deny by default, allow trusted Microsoft services (ACR is one) and the operator."""
    return set_network_rules(AzureClients.of(credentials, subscription_id), vault, True, ips)


@flow(name="registry-key-vault-firewall", validate_parameters=False)
@refuse_quietly
def registry_key_vault_firewall(request: FirewallRequest) -> EncryptionStatus:
    """System-assigned identity → grant it → switch encryption to it → vault firewall with
    the trusted-services bypass → key in that vault → rotate → verify."""
    request = parse_request(FirewallRequest, request)
    credentials = _credentials(request)
    with _lock(credentials, request):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        timeout = _seconds(request)
        clients = AzureClients.of(credentials, sub)
        registry = require_encrypted_registry(clients, rg, name)
        check_name("key", "key_name", request.key_name)
        found = read_vault(clients, request.vault_resource_group or rg, request.vault_name)
        if found is None:
            raise InvalidRequest("vault_name", request.vault_name, "no such vault")
        check_existing_vault(found)
        target = vault_info(found)
        current = encryption_status(registry)
        current_vault = vault_for_key(clients, str(current.versioned_key_identifier))
        principal = enable_system_identity(credentials, sub, rg, name)
        for vault in {v.id: v for v in (current_vault, target)}.values():
            grant_key_access(credentials, sub, vault, principal, timeout)
        rotate_registry_key.with_options(name="Switch encryption to the system identity")(
            credentials, sub, rg, name, str(current.key_identifier), SYSTEM, timeout
        )
        allow_trusted_services(credentials, sub, target, request.operator_ip_rules)
        key = ensure_key(credentials, sub, target, request.key_name, request.key_size, timeout)
        key_id = choose_key_id(key.id, bool(current.key_rotation_enabled))
        rotate_registry_key(credentials, sub, rg, name, key_id, SYSTEM, timeout)
        verify_registry_key(credentials, sub, rg, name, key.id, 60, 1)
        return show_encryption_status(credentials, sub, rg, name)


class SwitchIdentityRequest(ChangeRegistryRequest):
    """Troubleshooting: move encryption to another user-assigned identity, then remove the
    old one (removing an identity encryption still uses fails)."""

    old_identity_id: str = Field(..., description="Resource id of the identity to remove.")
    new_identity_name: str = Field(
        ..., description="User-assigned identity to use instead (created if missing)."
    )
    location: str = Field(..., description="Region of a new identity.")
    propagation_timeout_minutes: float = _TIMEOUT


@flow(name="switch-registry-encryption-identity", validate_parameters=False)
@refuse_quietly
def switch_registry_encryption_identity(request: SwitchIdentityRequest) -> EncryptionStatus:
    """Re-assign the old identity → new identity, assigned and granted → rotate to it (same
    key) → remove the old identity."""
    request = parse_request(SwitchIdentityRequest, request)
    credentials = _credentials(request)
    with _lock(credentials, request):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        timeout = _seconds(request)
        clients = AzureClients.of(credentials, sub)
        registry = require_encrypted_registry(clients, rg, name)
        check_name("identity", "new_identity_name", request.new_identity_name)
        status = encryption_status(registry)
        vault = vault_for_key(clients, str(status.versioned_key_identifier))
        assign_user_identity.with_options(name="Re-assign the identity")(
            credentials, sub, rg, name, request.old_identity_id
        )
        new = ensure_user_identity(
            credentials, sub, rg, request.new_identity_name, request.location
        )
        assign_user_identity(credentials, sub, rg, name, new.id)
        grant_key_access(credentials, sub, vault, new.principal_id, timeout)
        rotate_registry_key(
            credentials, sub, rg, name, str(status.key_identifier), new.client_id, timeout
        )
        remove_user_identity(credentials, sub, rg, name, request.old_identity_id)
        return show_encryption_status(credentials, sub, rg, name)
