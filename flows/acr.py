"""Procedure B: a Premium container registry encrypted with a customer-managed key; its
template variant, encryption status, key rotation, revocation, the Key Vault firewall
scenario and the identity switch of the troubleshooting section.

create-encrypted-registry: resource group → user-assigned identity → vault with purge
protection (or an adopted, activated managed HSM) → grant the identity (get, wrapKey,
unwrapKey; on an HSM Managed HSM Crypto Service Encryption User at key scope) → key → key id,
versioned or not → Premium registry with the identity and key → verify. The other flows'
docstrings give their steps."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.acr_models import (
    SYSTEM,
    ChangeRegistryRequest,
    EncryptedRegistryRequest,
    EncryptedRegistryResult,
    EncryptionStatus,
    FirewallRequest,
    RegistryInfo,
    RegistryRequest,
    RegistryTemplateRequest,
    RevokeRestoreRequest,
    RevokeRestoreResult,
    RotateRegistryKeyRequest,
    SwitchIdentityRequest,
    target_registry,
)
from byok.key_store import KeyStore, key_reference
from byok.keyvault_ids import KeyId
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.permissions import (
    IDENTITY_WRITE,
    REGISTRY_WRITE,
    ROLE_ASSIGNMENT_WRITE,
    VAULT_WRITE,
)
from byok.validation import check_name
from tasks.acr import (
    ensure_encrypted_registry,
    require_registry,
    show_encryption_status,
    validate_create_request,
    validate_rotation,
)
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
from tasks.acr_plan import (
    plan_encrypted_registry,
    plan_identity_switch,
    plan_key_revocation,
    plan_registry_firewall,
    plan_registry_key_rotation,
    plan_registry_template,
)
from tasks.acr_template import deploy_template
from tasks.events import emit_byok_event
from tasks.key_vault import (
    allow_trusted_services,
    check_key_store,
    check_key_vault,
    ensure_key,
    ensure_key_vault,
    ensure_rotation_policy,
    find_key_store,
    grant_key_use,
    new_key_version,
    require_vault,
    revoke_key_use,
    verify_version_enabled,
)
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.resource_group import ensure_resource_group
from tasks.run_lock import resource_lock
from tasks.subscription import check_permissions, check_subscription_regions

__all__ = [  # the requests and results, importable from the flows that take them
    "ChangeRegistryRequest",
    "EncryptedRegistryRequest",
    "EncryptedRegistryResult",
    "EncryptionStatus",
    "FirewallRequest",
    "RegistryRequest",
    "RegistryTemplateRequest",
    "RevokeRestoreRequest",
    "RevokeRestoreResult",
    "RotateRegistryKeyRequest",
    "SwitchIdentityRequest",
    "create_encrypted_registry",
    "create_encrypted_registry_from_template",
    "registry_key_vault_firewall",
    "revoke_and_restore_registry_key",
    "rotate_registry_key_flow",
    "show_registry_encryption",
    "switch_registry_encryption_identity",
]


@flow(name="create-encrypted-registry", validate_parameters=False)
@refuse_quietly
def create_encrypted_registry(
    request: EncryptedRegistryRequest, credentials: AzureCredentials | None = None
) -> EncryptedRegistryResult | Plan:
    """Resource group → identity → vault with purge protection (or the adopted managed HSM)
    → grant the identity (on an HSM its local role at key scope) → key → key id (versioned
    or not) → Premium registry with the identity and key → verify.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(EncryptedRegistryRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id, request.resource_group
    timeout = request.propagation_timeout_minutes * 60
    check_subscription_regions(credentials, request.subscription_id, {"location": request.location})
    validate_create_request(credentials, request)
    hsm = check_key_store(credentials, request)
    check_permissions(
        credentials,
        sub,
        rg,
        [
            IDENTITY_WRITE,
            *([] if hsm else [VAULT_WRITE]),
            REGISTRY_WRITE,
            *([ROLE_ASSIGNMENT_WRITE] if request.vault_rbac and not hsm else []),
        ],
        "create-encrypted-registry",
    )
    if request.plan_only:
        plan_encrypted_registry(credentials, request, hsm)
        return publish_plan("create-encrypted-registry")
    target = target_registry(request, credentials.subscription_id)
    with resource_lock(target, wait=request.wait_for_other_run):
        ensure_resource_group(credentials, sub, rg, request.location)
        identity = ensure_user_identity(
            credentials, sub, rg, request.identity_name, request.location
        )
        vault = hsm or ensure_key_vault(
            credentials,
            sub,
            rg,
            str(request.vault_name),
            request.location,
            request.vault_rbac,
            timeout,
        )
        grant_key_use(
            credentials, sub, vault, identity.principal_id, timeout, key_name=request.key_name
        )
        key = ensure_key(credentials, sub, vault, request.key_name, request.key_size, timeout)
        if request.rotation_policy is not None:
            ensure_rotation_policy(credentials, sub, key.versionless_id, request.rotation_policy)
        key_id = key_reference(key.id, request.automatic_rotation)
        ensure_encrypted_registry(
            credentials, sub, rg, request.registry_name, request.location, identity, key_id, timeout
        )
        registry = verify_registry_key(credentials, sub, rg, request.registry_name, key.id, 60, 1)
        return _announced("create-encrypted-registry", registry, vault)


@flow(name="create-encrypted-registry-from-template", validate_parameters=False)
@refuse_quietly
def create_encrypted_registry_from_template(
    request: RegistryTemplateRequest, credentials: AzureCredentials | None = None
) -> EncryptedRegistryResult | Plan:
    """Resource group → vault → key → key id → template deployment → verify.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(RegistryTemplateRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id, request.resource_group
    timeout = request.propagation_timeout_minutes * 60
    check_subscription_regions(credentials, request.subscription_id, {"location": request.location})
    validate_create_request(credentials, request.as_create_request())
    check_key_vault(
        credentials, sub, rg, request.vault_name, request.key_name, request.location, True
    )
    if request.plan_only:
        plan_registry_template(credentials, request)
        return publish_plan("create-encrypted-registry-from-template")
    target = target_registry(request, credentials.subscription_id)
    with resource_lock(target, wait=request.wait_for_other_run):
        ensure_resource_group(credentials, sub, rg, request.location)
        vault = ensure_key_vault(
            credentials, sub, rg, request.vault_name, request.location, False, timeout
        )
        key = ensure_key(credentials, sub, vault, request.key_name, request.key_size, timeout)
        parameters = request.template_parameters(key_reference(key.id, request.automatic_rotation))
        deploy_template(credentials, sub, rg, request.deployment_name, parameters, vault, timeout)
        registry = verify_registry_key(credentials, sub, rg, request.registry_name, key.id, 60, 1)
        return _announced("create-encrypted-registry-from-template", registry, vault)


def _announced(flow: str, registry: RegistryInfo, vault: KeyStore) -> EncryptedRegistryResult:
    """The `resource.encrypted` event, the run's summary, and the create flows' result."""
    emit_byok_event(
        "resource.encrypted",
        registry.id,
        "container-registry",
        related={"key": registry.key_id, "vault": vault.id},
    )
    summarize(flow)
    return EncryptedRegistryResult.of(registry, vault)


@flow(name="show-registry-encryption", validate_parameters=False)
@refuse_quietly
def show_registry_encryption(
    request: RegistryRequest, credentials: AzureCredentials | None = None
) -> EncryptionStatus | Plan:
    """`az acr encryption show`, returned and published as a markdown artifact (read only:
    its plan, with `plan_only`, is empty).

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(RegistryRequest, request)
    status = show_encryption_status(
        AzureCredentials.chosen(credentials, request.azure_credentials_block),
        request.subscription_id,
        request.resource_group,
        request.registry_name,
    )
    return publish_plan("show-registry-encryption") if request.plan_only else status


@flow(name="rotate-registry-key", validate_parameters=False)
@refuse_quietly
def rotate_registry_key_flow(
    request: RotateRegistryKeyRequest, credentials: AzureCredentials | None = None
) -> EncryptionStatus | Plan:
    """New key version (or new key) → versioned registries: rotate-key with the chosen
    identity; versionless ones: wait for the pick-up → verify → old version still enabled.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(RotateRegistryKeyRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    target = target_registry(request, credentials.subscription_id)
    with resource_lock(target, wait=request.wait_for_other_run):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        status, identity = validate_rotation(credentials, request)
        if request.plan_only:
            plan_registry_key_rotation(credentials, request, status, identity)
            return publish_plan("rotate-registry-key")
        old = str(status.versioned_key_identifier)
        if request.new_key_name:
            store = find_key_store(credentials, sub, old)
            new = ensure_key(credentials, sub, store, request.new_key_name, 3072, 60).id
        else:
            new = new_key_version(credentials, sub, old, request.rotation_id)
        follows = bool(status.key_rotation_enabled) and not request.new_key_name
        if not follows or identity != status.identity:
            key_id = key_reference(new, bool(status.key_rotation_enabled))
            rotate_registry_key(credentials, sub, rg, name, key_id, identity, 15 * 60)
        timeout = request.timeout_minutes * 60
        verify_registry_key(credentials, sub, rg, name, new, timeout, request.poll_seconds)
        verify_version_enabled(credentials, sub, old)
        status = show_encryption_status(credentials, sub, rg, name)
        emit_byok_event(
            "key.rotated",
            KeyId.parse(new).versionless,
            "key",
            related={"container-registry": target},
            payload={"new_version": KeyId.parse(new).version},
        )
        summarize("rotate-registry-key")
        return status


@flow(name="revoke-and-restore-registry-key", validate_parameters=False)
@refuse_quietly
def revoke_and_restore_registry_key(
    request: RevokeRestoreRequest, credentials: AzureCredentials | None = None
) -> RevokeRestoreResult | Plan:
    """Remove the encryption identity's key access → registry data inaccessible → restore
    the access → registry data accessible again.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(RevokeRestoreRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    target = target_registry(request, credentials.subscription_id)
    with resource_lock(target, wait=request.wait_for_other_run):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        timeout = request.propagation_timeout_minutes * 60
        registry = require_registry(credentials, sub, rg, name)
        principal = registry.identity_principal_id
        store = find_key_store(credentials, sub, registry.versioned_key_id)
        if request.plan_only:
            plan_key_revocation(credentials, sub, registry, store)
            return publish_plan("revoke-and-restore-registry-key")
        revoke_key_use(credentials, sub, store, principal)
        key = KeyId.parse(registry.versioned_key_id).versionless
        related = {"container-registry": registry.id}
        emit_byok_event(
            "key.revoked", key, "key", related=related, payload={"principal_id": principal}
        )
        revoked = prove_data_refused(credentials, sub, rg, name, False, 0)
        grant_key_use(credentials, sub, store, principal, timeout)
        restored = prove_data_served(credentials, sub, rg, name, True, timeout)
        emit_byok_event(
            "key.restored", key, "key", related=related, payload={"principal_id": principal}
        )
        summarize("revoke-and-restore-registry-key")
        return RevokeRestoreResult(revoked=revoked, restored=restored)


@flow(name="registry-key-vault-firewall", validate_parameters=False)
@refuse_quietly
def registry_key_vault_firewall(
    request: FirewallRequest, credentials: AzureCredentials | None = None
) -> EncryptionStatus | Plan:
    """System-assigned identity → grant it → switch encryption to it → vault firewall with
    the trusted-services bypass → key in that vault → rotate → verify.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(FirewallRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    with resource_lock(
        target_registry(request, credentials.subscription_id), wait=request.wait_for_other_run
    ):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        timeout = request.propagation_timeout_minutes * 60
        current = require_registry(credentials, sub, rg, name)
        check_name("key", "key_name", request.key_name)
        target = require_vault(
            credentials, sub, request.vault_resource_group or rg, request.vault_name
        )
        current_store = find_key_store(credentials, sub, current.versioned_key_id)
        if request.plan_only:
            plan_registry_firewall(credentials, request, current, [current_store, target])
            return publish_plan("registry-key-vault-firewall")
        principal = enable_system_identity(credentials, sub, rg, name)
        for store in {s.id: s for s in (current_store, target)}.values():
            grant_key_use(credentials, sub, store, principal, timeout)
        switch_to_system_identity(credentials, sub, rg, name, current.key_id, SYSTEM, timeout)
        allow_trusted_services(credentials, sub, target, request.operator_ip_rules)
        key = ensure_key(credentials, sub, target, request.key_name, request.key_size, timeout)
        key_id = key_reference(key.id, current.follows_latest)
        rotate_registry_key(credentials, sub, rg, name, key_id, SYSTEM, timeout)
        verify_registry_key(credentials, sub, rg, name, key.id, 60, 1)
        summarize("registry-key-vault-firewall")
        return show_encryption_status(credentials, sub, rg, name)


@flow(name="switch-registry-encryption-identity", validate_parameters=False)
@refuse_quietly
def switch_registry_encryption_identity(
    request: SwitchIdentityRequest, credentials: AzureCredentials | None = None
) -> EncryptionStatus | Plan:
    """Re-assign the old identity (while encryption uses it) → new identity, assigned and
    granted → rotate to it (same key) → remove the old identity.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(SwitchIdentityRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    with resource_lock(
        target_registry(request, credentials.subscription_id), wait=request.wait_for_other_run
    ):
        sub, rg, name = request.subscription_id, request.resource_group, request.registry_name
        timeout = request.propagation_timeout_minutes * 60
        current = require_registry(credentials, sub, rg, name)
        check_name("identity", "new_identity_name", request.new_identity_name)
        store = find_key_store(credentials, sub, current.versioned_key_id)
        if request.plan_only:
            plan_identity_switch(credentials, request, current, store)
            return publish_plan("switch-registry-encryption-identity")
        if current.uses_identity(request.old_identity_id):  # not once switched (a re-run)
            reassign_user_identity(credentials, sub, rg, name, request.old_identity_id)
        new = ensure_user_identity(
            credentials, sub, rg, request.new_identity_name, request.location
        )
        assign_user_identity(credentials, sub, rg, name, new.id)
        grant_key_use(credentials, sub, store, new.principal_id, timeout)
        rotate_registry_key(credentials, sub, rg, name, current.key_id, new.client_id, timeout)
        remove_user_identity(credentials, sub, rg, name, request.old_identity_id)
        summarize("switch-registry-encryption-identity")
        return show_encryption_status(credentials, sub, rg, name)
