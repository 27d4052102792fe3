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
from azure.mgmt.resource.deployments.models import (
    Deployment,
    DeploymentParameter,
    DeploymentProperties,
)
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from blocks.azure import AzureCredentials
from byok.acr_models import (
    EncryptedRegistryRequest,
    EncryptionStatus,
    IdentityInfo,
    RegistryInfo,
    RotateRegistryKeyRequest,
    check_existing_registry,
    encrypted_registry_body,
    encryption_status,
    identities,
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
from byok.polling import poll_until, read_settled
from byok.registry_probe import probe_registry_data
from byok.retrying import retry_while, write_or_find
from byok.sdk_values import text
from byok.validation import InvalidRequest, check_name, check_rsa_key_size
from clients.azure import AzureClients
from tasks.retry import STEP_RETRIES

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
    except ResourceNotFoundError:
        found = write_or_find(
            lambda: identities.create_or_update(resource_group, name, {"location": location}),
            lambda: or_none(lambda: identities.get(resource_group, name)),
            is_azure_error,
        )
        get_run_logger().info("Created identity %s", name)
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
    existing = read_registry(clients, resource_group, name)
    if existing is not None and text(existing.provisioning_state) != "Failed":
        check_existing_registry(existing, key_id)
        get_run_logger().info("Registry %s already encrypted with %s", name, key_id)
        return registry_info(existing)
    body = encrypted_registry_body(location, identity, key_id)
    registries = clients.container_registry().registries

    def created_before() -> Registry | None:
        found = read_settled_registry(clients, resource_group, name)
        ok = found is not None and text(found.provisioning_state) == "Succeeded"
        return found if ok else None

    with named_failure(
        registry_id(clients.subscription_id, resource_group, name), "creation", waited=True
    ):
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
    get_run_logger().info("Created registry %s encrypted with %s", name, key_id)
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
    return registry_info(clients.container_registry().registries.get(resource_group, name))


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
    current = encryption_status(clients.container_registry().registries.get(resource_group, name))
    identity = identity or str(current.identity)
    if (current.key_identifier, current.identity) == (key_id, identity):
        get_run_logger().info("Registry %s already uses %s with %s", name, key_id, identity)
        return current
    update = key_update(key_id, identity)

    def done(registry: Registry) -> bool:
        status = encryption_status(registry)
        return (status.key_identifier, status.identity) == (key_id, identity)

    with named_failure(
        registry_id(clients.subscription_id, resource_group, name), "key rotation", waited=True
    ):
        rotated = retry_while(
            lambda: _patch(clients, resource_group, name, update, done),
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=_log_retry(f"key rotation of {name}"),
        )
    get_run_logger().info("Registry %s now uses %s with identity %s", name, key_id, identity)
    return encryption_status(rotated)


@task(name="Configure system-assigned identity", **STEP_RETRIES)
def enable_system_identity(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, name: str
) -> str:
    """Turn the registry's system-assigned identity on (user-assigned ones kept); returns its
    principal id (the portal's object ID)."""
    clients = AzureClients.of(credentials, subscription_id)
    identity = clients.container_registry().registries.get(resource_group, name).identity
    if identity and identity.principal_id:
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
    get_run_logger().info("Registry %s has system-assigned identity %s", name, principal)
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
    identity = clients.container_registry().registries.get(resource_group, name).identity
    assigned = {k.lower() for k in (identity.user_assigned_identities or {})} if identity else set()
    if identity_id.lower() in assigned:
        return
    _set_user_identities(clients, resource_group, name, identity_id, None)
    get_run_logger().info("Assigned %s to registry %s", identity_id.rsplit("/", 1)[-1], name)


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
    identity = clients.container_registry().registries.get(resource_group, name).identity
    assigned = {k.lower() for k in (identity.user_assigned_identities or {})} if identity else set()
    if identity_id.lower() not in assigned:
        return
    _set_user_identities(clients, resource_group, name, None, identity_id)
    get_run_logger().info("Removed %s from registry %s", identity_id.rsplit("/", 1)[-1], name)


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
    timeout_seconds: float,
) -> list[str]:
    """`az deployment group create --template-file CMKtemplate.json --parameters …`
    (Incremental, so a re-run converges); a registry refused while the template's access
    policy propagates is redeployed with bounded backoff. Returns the deployed resource ids."""
    deployments = AzureClients.of(credentials, subscription_id).deployments().deployments
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
    deployed = [str(r.id) for r in result.properties.output_resources or []]
    get_run_logger().info("Deployment %s: %d resources", deployment_name, len(deployed))
    return deployed


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
    answer = probe_registry_data(
        clients.container_registry().registries,
        registry_id(clients.subscription_id, resource_group, name),
        expect_access,
        timeout_seconds,
        _log_retry(f"data of {name}"),
    )
    get_run_logger().info(
        "Registry %s %s its key (%s)", name, "can use" if answer == "ok" else "cannot use", answer
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
