"""Container registry steps of the customer-managed-key procedure: validation, identity,
registry, encryption status, key rotation, data probes, identity changes, template
deployment."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry.models import Registry, RegistryUpdateParameters
from azure.mgmt.core.tools import resource_id
from azure.mgmt.resource.deployments.models import (
    Deployment,
    DeploymentParameter,
    DeploymentProperties,
)
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from blocks.azure import AzureCredentials
from byok.acr_models import (
    SYSTEM,
    EncryptedRegistryRequest,
    EncryptionStatus,
    FirewallRequest,
    IdentityInfo,
    RegistryInfo,
    RegistryTemplateRequest,
    RotateRegistryKeyRequest,
    SwitchIdentityRequest,
    check_existing_registry,
    encrypted_registry_body,
    encryption_status,
    identities,
    key_changes,
    key_update,
    registry_id,
    registry_info,
    rotation_identity,
    status_markdown,
)
from byok.azure_errors import (
    error_code,
    is_azure_error,
    is_lost_answer,
    is_propagation_delay,
    named_failure,
    or_none,
)
from byok.key_store import (
    HsmInfo,
    KeyStore,
    VaultInfo,
    key_reference,
)
from byok.keyvault_ids import KeyId
from byok.polling import poll_until, read_settled
from byok.registry_probe import probe_registry_data
from byok.retrying import retry_while, write_or_find
from byok.sdk_values import text
from byok.validation import InvalidRequest, check_name, check_rsa_key_size
from clients.azure import AzureClients
from clients.key_store_access import (
    holds_service_key_use,
    network_rules_set,
    vault_for_key,
)
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

TEMPLATE = files("byok") / "templates" / "acr_cmk.json"  # package data, found in a wheel too


def read_registry(clients: AzureClients, resource_group: str, name: str) -> Registry | None:
    """The registry, or None."""
    return or_none(lambda: clients.container_registry().registries.get(resource_group, name))


def read_settled_registry(clients: AzureClients, resource_group: str, name: str) -> Registry | None:
    """The registry once no operation on it is running (None: it does not exist)."""
    return read_settled(
        lambda: read_registry(clients, resource_group, name),
        lambda r: text(r.provisioning_state) if r.provisioning_state else None,
        timeout_seconds=600,
        interval_seconds=clients.block.polling_interval_seconds,
        what=f"Registry {name}",
    )


def require_encrypted_registry(clients: AzureClients, resource_group: str, name: str) -> Registry:
    """The registry, which must exist and be encrypted with a customer-managed key."""
    registry = read_registry(clients, resource_group, name)
    if registry is None:
        raise InvalidRequest(
            "registry_name", name, f"no such registry in resource group {resource_group}"
        )
    check_existing_registry(registry)
    return registry


def _log_retry(what: str) -> Any:
    def log(exc: Exception, wait: float) -> None:
        get_run_logger().info(
            "%s not possible yet (%s); retrying in %.1f s", what, error_code(exc), wait
        )

    return log


def _patch(
    clients: AzureClients,
    resource_group: str,
    name: str,
    update: RegistryUpdateParameters,
    done: Callable[[Registry], bool],
) -> Registry:
    """PATCH the registry; a lost answer is followed by a read (is it `done`?), not a second
    PATCH."""
    registries = clients.container_registry().registries

    def applied() -> Registry | None:
        found = read_settled_registry(clients, resource_group, name)
        return found if found is not None and done(found) else None

    return write_or_find(
        lambda: registries.begin_update(resource_group, name, update).result(),
        applied,
        is_lost_answer,
    )


# -- tasks -----------------------------------------------------------------------------------
@task(name="Create a user-assigned managed identity", **STEP_RETRIES)
def ensure_user_identity(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    location: str,
) -> IdentityInfo:
    """Get or create the identity; keep its id and principal id."""
    identities = AzureClients.of(credentials, subscription_id).msi().user_assigned_identities
    try:
        found = identities.get(resource_group, name)
        report(str(found.id), None)
    except ResourceNotFoundError:
        found = write_or_find(
            lambda: identities.create_or_update(resource_group, name, {"location": location}),
            lambda: or_none(lambda: identities.get(resource_group, name)),
            is_azure_error,
        )
        report(str(found.id), "create")
    return IdentityInfo(
        id=str(found.id),
        name=str(found.name),
        principal_id=str(found.principal_id),
        client_id=str(found.client_id),
    )


@task(name="Create a registry with customer-managed key", **STEP_RETRIES)
def ensure_encrypted_registry(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    location: str,
    identity: IdentityInfo,
    key_id: str,
    timeout_seconds: float,
) -> RegistryInfo:
    """`az acr create --sku Premium --identity … --key-encryption-key …`; an existing registry
    must already match. A grant still propagating is retried with bounded backoff."""
    clients = AzureClients.of(credentials, subscription_id)
    target = registry_id(clients.subscription_id, resource_group, name)
    existing = read_registry(clients, resource_group, name)
    if existing is not None and text(existing.provisioning_state) != "Failed":
        check_existing_registry(existing, key_id)
        report(target, None, note=f"key {key_id}")
        return registry_info(existing)
    body = encrypted_registry_body(location, identity, key_id)
    registries = clients.container_registry().registries

    def created_before() -> Registry | None:
        found = read_settled_registry(clients, resource_group, name)
        ok = found is not None and text(found.provisioning_state) == "Succeeded"
        return found if ok else None

    with named_failure(target, "creation", waited=True):
        created = retry_while(
            lambda: write_or_find(
                lambda: registries.begin_create(resource_group, name, body).result(),
                created_before,
                is_azure_error,
            ),
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=_log_retry(f"registry {name}"),
        )
        check_existing_registry(created, key_id)
    report(target, "recreate" if existing is not None else "create", note=f"key {key_id}")
    return registry_info(created)


@task(name="Show encryption status", **STEP_RETRIES)
def show_encryption_status(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, name: str
) -> EncryptionStatus:
    """`az acr encryption show`, also published as a markdown artifact."""
    registry = read_registry(AzureClients.of(credentials, subscription_id), resource_group, name)
    if registry is None:
        raise InvalidRequest("registry_name", name, f"no registry of that name in {resource_group}")
    status = encryption_status(registry)
    create_markdown_artifact(
        key="acr-encryption-status",
        markdown=status_markdown(name, status),
        description=f"Encryption status of registry {name}",
    )
    return status


@task(name="Verify the registry uses the key", **STEP_RETRIES)
def verify_registry_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    versioned_key_id: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> RegistryInfo:
    """Wait until the registry reports encryption enabled with `versioned_key_id` (a
    versionless registry picks a new version up by itself, within an hour in Azure)."""
    clients = AzureClients.of(credentials, subscription_id)

    def state() -> str:
        status = encryption_status(
            clients.container_registry().registries.get(resource_group, name)
        )
        if status.status != "enabled":
            return status.status
        return "done" if status.versioned_key_identifier == versioned_key_id else "old key"

    poll_until(
        state,
        frozenset({"done"}),
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Registry {name}",
    )
    verified = registry_info(clients.container_registry().registries.get(resource_group, name))
    report(verified.id, "verify", note=f"key {versioned_key_id}")
    return verified


@task(name="Rotate the registry key", **STEP_RETRIES)
def rotate_registry_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    key_id: str,
    identity: str | None,
    timeout_seconds: float,
) -> EncryptionStatus:
    """`az acr encryption rotate-key --key-encryption-key … --identity …` (a client id,
    `system`, or None: the identity it uses now); nothing when the registry already uses
    them."""
    clients = AzureClients.of(credentials, subscription_id)
    target = registry_id(clients.subscription_id, resource_group, name)
    current = encryption_status(clients.container_registry().registries.get(resource_group, name))
    diff = key_changes(current, key_id, identity)
    if not diff:
        report(target, None, note=f"key {key_id}, identity {current.identity}")
        return current
    identity = identity or str(current.identity)
    update = key_update(key_id, identity)

    def done(registry: Registry) -> bool:
        status = encryption_status(registry)
        return (status.key_identifier, status.identity) == (key_id, identity)

    with named_failure(target, "key rotation", waited=True):
        rotated = retry_while(
            lambda: _patch(clients, resource_group, name, update, done),
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=_log_retry(f"key rotation of {name}"),
        )
    report(target, "update", changes=diff)
    return encryption_status(rotated)


@task(name="Configure system-assigned identity", **STEP_RETRIES)
def enable_system_identity(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, name: str
) -> str:
    """Turn the registry's system-assigned identity on (user-assigned ones kept); returns its
    principal id (the portal's object ID)."""
    clients = AzureClients.of(credentials, subscription_id)
    target = registry_id(clients.subscription_id, resource_group, name)
    identity = clients.container_registry().registries.get(resource_group, name).identity
    if identity and identity.principal_id:
        report(target, None, note=f"system-assigned identity {identity.principal_id}")
        return str(identity.principal_id)
    users = list((identity.user_assigned_identities or {}) if identity else {})
    update = RegistryUpdateParameters(identity=identities(True, users))
    patched = _patch(
        clients,
        resource_group,
        name,
        update,
        lambda r: bool(r.identity and r.identity.principal_id),
    )
    principal = str(patched.identity.principal_id)
    report(target, "update", note=f"system-assigned identity {principal} on")
    return principal


def _set_user_identities(
    clients: AzureClients, resource_group: str, name: str, add: str | None, remove: str | None
) -> Registry:
    registry = clients.container_registry().registries.get(resource_group, name)
    current = registry.identity
    users = {k.lower(): k for k in (current.user_assigned_identities or {})} if current else {}
    if add:
        users.setdefault(add.lower(), add)
    if remove:
        users.pop(remove.lower(), None)
    registry.identity = identities(bool(current and current.principal_id), list(users.values()))
    return (
        clients.container_registry()
        .registries.begin_create(resource_group, name, registry)
        .result()
    )


def assigned_identities(clients: AzureClients, resource_group: str, name: str) -> set[str]:
    """The ids (lower case) of the user-assigned identities the registry has."""
    identity = clients.container_registry().registries.get(resource_group, name).identity
    return {k.lower() for k in (identity.user_assigned_identities or {})} if identity else set()


def identity_note(identity_id: str, assigned: bool) -> str:
    """A summary's note on one user-assigned identity of a registry."""
    return f"identity {identity_id.rsplit('/', 1)[-1]} {'assigned' if assigned else 'removed'}"


@task(name="Assign the identity to the registry", **STEP_RETRIES)
def assign_user_identity(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    identity_id: str,
) -> None:
    """`az acr identity assign --identities <id>` (nothing when assigned already)."""
    clients = AzureClients.of(credentials, subscription_id)
    target = registry_id(clients.subscription_id, resource_group, name)
    if identity_id.lower() in assigned_identities(clients, resource_group, name):
        report(target, None, note=identity_note(identity_id, True))
        return
    _set_user_identities(clients, resource_group, name, identity_id, None)
    report(target, "update", note=identity_note(identity_id, True))


@task(name="Remove the old identity", **STEP_RETRIES)
def remove_user_identity(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    identity_id: str,
) -> None:
    """`az acr identity remove --identities <id>` (nothing when not assigned)."""
    clients = AzureClients.of(credentials, subscription_id)
    target = registry_id(clients.subscription_id, resource_group, name)
    if identity_id.lower() not in assigned_identities(clients, resource_group, name):
        report(target, None, note=identity_note(identity_id, False))
        return
    _set_user_identities(clients, resource_group, name, None, identity_id)
    report(target, "update", note=identity_note(identity_id, False))


def deployment_id(subscription_id: str, resource_group: str, name: str) -> str:
    """A resource group's deployment's id."""
    return resource_id(
        subscription=subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.Resources",
        type="deployments",
        name=name,
    )


def template_applied(
    clients: AzureClients, resource_group: str, parameters: dict[str, str], store: KeyStore
) -> bool:
    """Whether what the template makes is there already (read only): its identity, holding
    key use on the vault, and the registry encrypted with `kek_id` through that identity."""
    identity = or_none(
        lambda: clients.msi().user_assigned_identities.get(
            resource_group, parameters["identity_name"]
        )
    )
    registry = read_registry(clients, resource_group, parameters["registry_name"])
    if identity is None or registry is None:
        return False
    status = encryption_status(registry)
    return (status.key_identifier, status.identity) == (
        parameters["kek_id"],
        str(identity.client_id),
    ) and holds_service_key_use(clients, store, str(identity.principal_id))


def load_template() -> dict[str, Any]:
    """The ARM template of the doc (identity, access policy, registry)."""
    return json.loads(TEMPLATE.read_text())


@task(name="Deploy the template", **STEP_RETRIES)
def deploy_template(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    deployment_name: str,
    parameters: dict[str, str],
    store: KeyStore,
    timeout_seconds: float,
) -> None:
    """`az deployment group create --template-file CMKtemplate.json --parameters …`
    (Incremental, so a re-run converges; not sent when what it makes is there already: see
    `template_applied`); a registry refused while the template's access policy propagates is
    redeployed with bounded backoff."""
    clients = AzureClients.of(credentials, subscription_id)
    target = deployment_id(clients.subscription_id, resource_group, deployment_name)
    if template_applied(clients, resource_group, parameters, store):
        report(target, None, note="its identity, access policy and registry are in place")
        return
    deployments = clients.deployments().deployments
    body = Deployment(
        properties=DeploymentProperties(
            template=load_template(),
            parameters={k: DeploymentParameter(value=v) for k, v in parameters.items()},
            mode="Incremental",
        )
    )
    result = retry_while(
        lambda: deployments.begin_create_or_update(resource_group, deployment_name, body).result(),
        lambda exc: isinstance(exc, HttpResponseError) and "KeyVaultAccessForbidden" in str(exc),
        timeout_seconds=timeout_seconds,
        first_delay=2,
        on_retry=_log_retry(f"deployment {deployment_name}"),
    )
    deployed = len(result.properties.output_resources or [])
    report(target, "deploy", note=f"{deployed} resources")


@task(name="Use registry data", **STEP_RETRIES)
def probe_registry(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    expect_access: bool,
    timeout_seconds: float,
) -> str:
    """Import a small image (a registry data operation, which needs the key): 'ok' when
    access is expected (retried while a restored grant propagates), KeyVaultAccessForbidden
    when it is not (VerificationFailed if the registry still uses its key)."""
    clients = AzureClients.of(credentials, subscription_id)
    target = registry_id(clients.subscription_id, resource_group, name)
    answer = probe_registry_data(
        clients.container_registry().registries,
        target,
        expect_access,
        timeout_seconds,
        _log_retry(f"data of {name}"),
    )
    report(
        target, "verify", note="data accessible" if answer == "ok" else f"data refused: {answer}"
    )
    return answer


@task(name="Read the registry", **STEP_RETRIES)
def require_registry(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, name: str
) -> RegistryInfo:
    """The registry, which must exist and be encrypted with a customer-managed key."""
    clients = AzureClients.of(credentials, subscription_id)
    return registry_info(require_encrypted_registry(clients, resource_group, name))


@task(name="Validate request")
def validate_create_request(
    credentials: AzureCredentials, request: EncryptedRegistryRequest
) -> None:
    """Names and an existing registry (read-only): a bad request fails before anything is
    written. (The vault or managed HSM and the key: `check_key_store`.)"""
    check_name("resource_group", "resource_group", request.resource_group)
    if request.key_store == "key-vault":
        check_name("key_vault", "vault_name", str(request.vault_name))
    check_name("key", "key_name", request.key_name)
    check_name("identity", "identity_name", request.identity_name)
    check_rsa_key_size("key_size", request.key_size)
    clients = AzureClients.of(credentials, request.subscription_id)
    registry = read_registry(clients, request.resource_group, request.registry_name)
    if registry is not None:
        check_existing_registry(registry)


@task(name="Validate rotation request")
def validate_rotation(
    credentials: AzureCredentials, request: RotateRegistryKeyRequest
) -> tuple[EncryptionStatus, str]:
    """The registry is encrypted; the identity resolves to a client id (or `system`)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    registry = require_encrypted_registry(clients, request.resource_group, request.registry_name)
    if request.new_key_name:
        check_name("key", "new_key_name", request.new_key_name)
    return encryption_status(registry), rotation_identity(registry, request.identity)


# -- plans (reads only) ------------------------------------------------------------------
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


prove_data_refused = probe_registry.with_options(name="Prove registry data is inaccessible")
prove_data_served = probe_registry.with_options(name="Prove registry data is accessible")
switch_to_system_identity = rotate_registry_key.with_options(
    name="Switch encryption to the system identity"
)
reassign_user_identity = assign_user_identity.with_options(name="Re-assign the identity")


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
