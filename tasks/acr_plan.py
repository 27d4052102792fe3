"""The registry flows' plans (reads only): what each step of create-encrypted-registry, its
template variant, the key rotation, the revocation, the firewall scenario and the identity
switch would do."""

from __future__ import annotations

from typing import Any

from azure.mgmt.core.tools import resource_id
from prefect import task

from blocks.azure import AzureCredentials
from byok.acr_models import (
    SYSTEM,
    EncryptedRegistryRequest,
    EncryptionStatus,
    FirewallRequest,
    RegistryInfo,
    RegistryTemplateRequest,
    RotateRegistryKeyRequest,
    SwitchIdentityRequest,
    check_existing_registry,
    deployment_id,
    encryption_status,
    identity_note,
    key_changes,
    registry_id,
)
from byok.azure_errors import or_none
from byok.key_store import HsmInfo, KeyStore, VaultInfo, key_reference
from byok.keyvault_ids import KeyId
from clients.azure import AzureClients
from clients.key_store_access import holds_service_key_use, network_rules_set, vault_for_key
from clients.registries import assigned_identities, read_registry, template_applied
from tasks.acr import ensure_encrypted_registry
from tasks.acr_identity import (
    assign_user_identity,
    enable_system_identity,
    ensure_user_identity,
    reassign_user_identity,
    remove_user_identity,
)
from tasks.acr_key import (
    prove_data_refused,
    prove_data_served,
    rotate_registry_key,
    switch_to_system_identity,
    verify_registry_key,
)
from tasks.acr_template import deploy_template
from tasks.key_vault import (
    allow_trusted_services,
    grant_key_use,
    plan_key,
    plan_key_vault,
    plan_new_key_version,
    plan_rotation_policy,
    revoke_key_use,
    verify_version_enabled,
)
from tasks.outcomes import planned, report
from tasks.retry import STEP_RETRIES
from tasks.subscription import plan_resource_group


def _planned_get(
    step: Any, found: Any, clients: AzureClients, resource_group: str, kind: str, name: str
) -> None:
    """The row of get-or-create step `step` for resource `name` of `kind` (namespace/type),
    `found` when it exists."""
    namespace, type_ = kind.split("/")
    where = resource_id(
        subscription=clients.subscription_id,
        resource_group=resource_group,
        namespace=namespace,
        type=type_,
        name=name,
    )
    planned(step, str(found.id) if found else where, None if found else "create")


def _planned_identity(clients: AzureClients, resource_group: str, name: str) -> Any:
    """The row of `ensure_user_identity`; the identity, when it exists."""
    identity = or_none(lambda: clients.msi().user_assigned_identities.get(resource_group, name))
    kind = "Microsoft.ManagedIdentity/userAssignedIdentities"
    _planned_get(ensure_user_identity, identity, clients, resource_group, kind, name)
    return identity


@task(name="Plan the encrypted registry", **STEP_RETRIES)
def plan_encrypted_registry(
    credentials: AzureCredentials, request: EncryptedRegistryRequest, hsm: HsmInfo | None
) -> None:
    """What each step of create-encrypted-registry would do, from reads only (`hsm`: the
    adopted managed HSM; else the vault is read here)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    sub, rg = clients.subscription_id, request.resource_group
    plan_resource_group.fn(credentials, sub, rg)
    identity = _planned_identity(clients, rg, request.identity_name)
    vault = str(request.vault_name)
    store = hsm or plan_key_vault.fn(credentials, request.subscription_id, rg, vault)
    principal = str(identity.principal_id) if identity else None
    held = holds_service_key_use(clients, store, principal, request.key_name)
    note = f"key use by {principal or 'the new identity'}"
    planned(grant_key_use, store.id if store else vault, None if held else "grant", note)
    key = plan_key.fn(credentials, request.subscription_id, store, request.key_name)
    if request.rotation_policy is not None:
        policy = request.rotation_policy
        plan_rotation_policy.fn(credentials, sub, key, request.key_name, policy)
    target = registry_id(sub, rg, request.registry_name)
    registry = read_registry(clients, rg, request.registry_name)
    if registry is not None and key is not None:
        check_existing_registry(registry, key_reference(key.versioned, request.automatic_rotation))
    planned(ensure_encrypted_registry, target, None if registry else "create")
    planned(verify_registry_key, target, "verify")


@task(name="Plan the key rotation", **STEP_RETRIES)
def plan_registry_key_rotation(
    credentials: AzureCredentials,
    request: RotateRegistryKeyRequest,
    status: EncryptionStatus,
    identity: str,
) -> None:
    """What each step of rotate-registry-key would do, from reads only (`status`: the
    registry's encryption now; `identity`: the one the rotation uses)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    old = KeyId.parse(str(status.versioned_key_identifier))
    if request.new_key_name:
        store = vault_for_key(clients, old.versioned)
        key = plan_key.fn(credentials, request.subscription_id, store, request.new_key_name)
        new = key.versioned if key else f"{store.url}/keys/{request.new_key_name}/(new version)"
    else:
        rotation = request.rotation_id or ""
        new = plan_new_key_version.fn(credentials, request.subscription_id, old.versioned, rotation)
    target = registry_id(clients.subscription_id, request.resource_group, request.registry_name)
    follows = bool(status.key_rotation_enabled) and not request.new_key_name
    if not follows or identity != status.identity:
        key_id = key_reference(new, bool(status.key_rotation_enabled))
        diff = key_changes(status, key_id, identity)
        verb = "update" if diff else None
        report(target, verb, step=rotate_registry_key.name, changes=diff, planned=True)
    planned(verify_registry_key, target, "verify", f"key {new}")
    planned(verify_version_enabled, old.versioned, "verify")


def _planned_rotation(
    step: Any, target: str, status: EncryptionStatus, key_id: str, identity: str | None
) -> EncryptionStatus:
    """The row of a rotate-key step; the encryption status after it."""
    diff = key_changes(status, key_id, identity)
    report(target, "update" if diff else None, step=step.name, changes=diff, planned=True)
    return status.model_copy(
        update={"key_identifier": key_id, "identity": identity or status.identity}
    )


def _planned_grant(clients: AzureClients, store: KeyStore, principal: str | None, who: str) -> None:
    """The row of `grant_key_use` for `principal` (None: an identity to be made, `who`)."""
    held = holds_service_key_use(clients, store, principal, None)
    planned(grant_key_use, store.id, None if held else "grant", f"key use by {principal or who}")


@task(name="Plan the template deployment", **STEP_RETRIES)
def plan_registry_template(credentials: AzureCredentials, request: RegistryTemplateRequest) -> None:
    """What each step of create-encrypted-registry-from-template would do, from reads only."""
    clients = AzureClients.of(credentials, request.subscription_id)
    sub, rg = clients.subscription_id, request.resource_group
    plan_resource_group.fn(credentials, sub, rg)
    store = plan_key_vault.fn(credentials, request.subscription_id, rg, request.vault_name)
    key = plan_key.fn(credentials, request.subscription_id, store, request.key_name)
    kek = key_reference(key.versioned, request.automatic_rotation) if key else None
    applied = (
        store is not None
        and kek is not None
        and template_applied(clients, rg, request.template_parameters(kek), store)
    )
    target = deployment_id(sub, rg, request.deployment_name)
    planned(deploy_template, target, None if applied else "deploy")
    planned(verify_registry_key, registry_id(sub, rg, request.registry_name), "verify")


@task(name="Plan the revocation", **STEP_RETRIES)
def plan_key_revocation(
    credentials: AzureCredentials,
    subscription_id: str | None,
    registry: RegistryInfo,
    store: KeyStore,
) -> None:
    """What each step of revoke-and-restore-registry-key would do, from reads only: its
    revocation and restore write every run, by design."""
    clients = AzureClients.of(credentials, subscription_id)
    principal = registry.identity_principal_id
    held = holds_service_key_use(clients, store, principal, None)
    planned(revoke_key_use, store.id, "revoke" if held else None, f"key use by {principal}")
    planned(prove_data_refused, registry.id, "verify")
    planned(grant_key_use, store.id, "grant", f"key use by {principal}")
    planned(prove_data_served, registry.id, "verify")


@task(name="Plan the firewall scenario", **STEP_RETRIES)
def plan_registry_firewall(
    credentials: AzureCredentials,
    request: FirewallRequest,
    current: RegistryInfo,
    stores: list[KeyStore],
) -> None:
    """What each step of registry-key-vault-firewall would do, from reads only (`stores`:
    the current key's store, then the firewalled vault)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    registry = clients.container_registry().registries.get(
        request.resource_group, request.registry_name
    )
    principal = registry.identity.principal_id if registry.identity else None
    note = "system-assigned identity"
    planned(enable_system_identity, current.id, None if principal else "update", note)
    for store in {s.id: s for s in stores}.values():
        _planned_grant(clients, store, principal, "the system identity")
    status = encryption_status(registry)
    status = _planned_rotation(
        switch_to_system_identity, current.id, status, current.key_id, SYSTEM
    )
    target = stores[-1]
    kept = isinstance(target, VaultInfo) and network_rules_set(
        clients, target, True, request.operator_ip_rules
    )
    note = "firewall, trusted services bypass"
    planned(allow_trusted_services, target.id, None if kept else "update", note)
    key = plan_key.fn(credentials, request.subscription_id, target, request.key_name)
    new = key.versioned if key else f"{target.url}/keys/{request.key_name}/(new version)"
    key_id = key_reference(new, current.follows_latest)
    _planned_rotation(rotate_registry_key, current.id, status, key_id, SYSTEM)
    planned(verify_registry_key, current.id, "verify", f"key {new}")


@task(name="Plan the identity switch", **STEP_RETRIES)
def plan_identity_switch(
    credentials: AzureCredentials,
    request: SwitchIdentityRequest,
    current: RegistryInfo,
    store: KeyStore,
) -> None:
    """What each step of switch-registry-encryption-identity would do, from reads only."""
    clients = AzureClients.of(credentials, request.subscription_id)
    rg, name, old = request.resource_group, request.registry_name, request.old_identity_id
    assigned = assigned_identities(clients, rg, name)
    if current.uses_identity(old):
        verb = None if old.lower() in assigned else "update"
        planned(reassign_user_identity, current.id, verb, identity_note(old, True))
    identity = _planned_identity(clients, rg, request.new_identity_name)
    new_id = str(identity.id) if identity else request.new_identity_name
    verb = None if new_id.lower() in assigned else "update"
    planned(assign_user_identity, current.id, verb, identity_note(new_id, True))
    principal = str(identity.principal_id) if identity else None
    _planned_grant(clients, store, principal, "the new identity")
    client_id = str(identity.client_id) if identity else "(the new identity)"
    status = encryption_status(clients.container_registry().registries.get(rg, name))
    _planned_rotation(rotate_registry_key, current.id, status, current.key_id, client_id)
    verb = "update" if old.lower() in assigned else None
    planned(remove_user_identity, current.id, verb, identity_note(old, False))
