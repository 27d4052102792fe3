"""Container registry steps of the customer-managed-key procedure: identity, registry,
encryption status, key rotation, data probes, identity changes, template deployment."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry.models import (
    EncryptionProperty,
    IdentityProperties,
    ImportImageParameters,
    ImportSource,
    KeyVaultProperties,
    Registry,
    RegistryUpdateParameters,
    Sku,
    UserIdentityProperties,
)
from azure.mgmt.core.tools import resource_id
from azure.mgmt.resource.deployments.models import (
    Deployment,
    DeploymentParameter,
    DeploymentProperties,
)
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from blocks.azure import AzureCredentials
from byok.azure_errors import (
    error_code,
    is_azure_error,
    is_lost_answer,
    is_propagation_delay,
    named_failure,
    or_none,
)
from byok.errors import VerificationFailed
from byok.keyvault_ids import KeyId
from byok.polling import poll_until, read_settled
from byok.retrying import retry_while, write_or_find
from byok.sdk_values import text
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from tasks.key_vault import (
    CRYPTO_SERVICE_ENCRYPTION_USER,
    SERVICE_KEY_PERMISSIONS,
    VaultInfo,
    grant,
)
from tasks.retry import STEP_RETRIES

SYSTEM = "system"  # keyVaultProperties.identity of the registry's system-assigned identity
TEMPLATE = files("byok") / "templates" / "acr_cmk.json"  # package data, found in a wheel too
PROBE_SOURCE = ("mcr.microsoft.com", "hello-world:latest")
PROBE_TAG = "byok-probe:latest"


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


# -- pure helpers ----------------------------------------------------------------------------
def registry_id(subscription_id: str, resource_group: str, name: str) -> str:
    """The resource id of a registry."""
    return resource_id(
        subscription=subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.ContainerRegistry",
        type="registries",
        name=name,
    )


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
        return None, str(identity.principal_id)
    for uid, uai in (identity.user_assigned_identities or {}).items() if identity else []:
        if uai.client_id == client_id:
            return uid, str(uai.principal_id)
    raise InvalidRequest(
        "registry_name", registry.name, f"its encryption identity '{client_id}' is not assigned"
    )


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


def require_encrypted_registry(clients: AzureClients, resource_group: str, name: str) -> Registry:
    """The registry, which must exist and be encrypted with a customer-managed key."""
    registry = read_registry(clients, resource_group, name)
    if registry is None:
        raise InvalidRequest(
            "registry_name", name, f"no such registry in resource group {resource_group}"
        )
    check_existing_registry(registry)
    return registry


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


@task(name="Enable key vault access", **STEP_RETRIES)
def grant_key_access(
    credentials: AzureCredentials,
    subscription_id: str | None,
    vault: VaultInfo,
    principal_id: str,
    timeout_seconds: float,
) -> None:
    """get, unwrapKey, wrapKey by access policy, or Key Vault Crypto Service Encryption User
    on RBAC vaults (decided from the vault)."""
    clients = AzureClients.of(credentials, subscription_id)
    grant(
        clients,
        vault,
        principal_id,
        SERVICE_KEY_PERMISSIONS,
        CRYPTO_SERVICE_ENCRYPTION_USER,
        timeout_seconds,
    )
    get_run_logger().info("%s may use the keys of %s", principal_id, vault.name)


@task(name="Choose key ID with or without key version")
def choose_key_id(versioned_key_id: str, automatic_rotation: bool) -> str:
    """Versionless for automatic rotation, else the versioned `kid`."""
    kid = KeyId.parse(versioned_key_id)
    return kid.versionless if automatic_rotation else kid.versioned


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
    body = Registry(
        location=location,
        sku=Sku(name="Premium"),
        identity=IdentityProperties(
            type="UserAssigned", user_assigned_identities={identity.id: UserIdentityProperties()}
        ),
        encryption=EncryptionProperty(
            status="enabled",
            key_vault_properties=KeyVaultProperties(
                key_identifier=key_id, identity=identity.client_id
            ),
        ),
    )
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
    identity: str,
    timeout_seconds: float,
) -> EncryptionStatus:
    """`az acr encryption rotate-key --key-encryption-key … --identity …` (a client id or
    `system`); nothing when the registry already uses them."""
    clients = AzureClients.of(credentials, subscription_id)
    current = encryption_status(clients.container_registry().registries.get(resource_group, name))
    if (current.key_identifier, current.identity) == (key_id, identity):
        get_run_logger().info("Registry %s already uses %s with %s", name, key_id, identity)
        return current
    update = RegistryUpdateParameters(
        encryption=EncryptionProperty(
            status="enabled",
            key_vault_properties=KeyVaultProperties(key_identifier=key_id, identity=identity),
        )
    )

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


@task(name="Verify the old key version stays enabled", **STEP_RETRIES)
def verify_version_enabled(
    credentials: AzureCredentials, subscription_id: str | None, versioned_key_id: str
) -> None:
    """Rotation must not disable the previous version (data wrapped with it stays readable)."""
    kid = KeyId.parse(versioned_key_id)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    if not keys.get_key(kid.name, kid.version).properties.enabled:
        raise VerificationFailed(versioned_key_id, "the previous key version is disabled")


@task(name="Use registry data", **STEP_RETRIES)
def probe_registry_data(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    expect_access: bool,
    timeout_seconds: float,
) -> str:
    """Import a small image (a registry data operation, which needs the key). Expecting
    access: retried while a restored grant propagates. Expecting no access: must fail with
    KeyVaultAccessForbidden. Returns the error code seen, or 'ok'."""
    registries = AzureClients.of(credentials, subscription_id).container_registry().registries
    params = ImportImageParameters(
        source=ImportSource(registry_uri=PROBE_SOURCE[0], source_image=PROBE_SOURCE[1]),
        target_tags=[PROBE_TAG],
        mode="Force",
    )

    def probe() -> None:
        registries.begin_import_image(resource_group, name, params).result()

    if expect_access:
        retry_while(
            probe,
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=_log_retry(f"data of {name}"),
        )
        get_run_logger().info("Registry %s can use its key", name)
        return "ok"
    try:
        probe()
    except HttpResponseError as exc:
        if error_code(exc) != "KeyVaultAccessForbidden":
            raise
        get_run_logger().info("Registry %s cannot use its key (%s)", name, error_code(exc))
        return "KeyVaultAccessForbidden"
    raise VerificationFailed(
        registry_id(subscription_id or credentials.subscription_id, resource_group, name),
        "the registry still uses its key after the access was revoked",
    )


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
    users = dict.fromkeys((identity.user_assigned_identities or {}) if identity else {})
    update = RegistryUpdateParameters(
        identity=IdentityProperties(
            type="SystemAssigned, UserAssigned" if users else "SystemAssigned",
            user_assigned_identities={k: UserIdentityProperties() for k in users} or None,
        )
    )
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
    system = bool(current and current.principal_id)
    kinds = [k for k, on in (("SystemAssigned", system), ("UserAssigned", bool(users))) if on]
    registry.identity = IdentityProperties(
        type=", ".join(kinds) or "None",
        user_assigned_identities={v: UserIdentityProperties() for v in users.values()} or None,
    )
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
