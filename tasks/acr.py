"""Container registry steps of the customer-managed-key procedure: the requests validated, the
registry read, created with its identity and key, and its encryption shown.

The registry's identities: tasks/acr_identity.py; its key rotated and verified, its data
probed: tasks/acr_key.py; the ARM template variant: tasks/acr_template.py; the plans:
tasks/acr_plan.py."""

from __future__ import annotations

from azure.mgmt.containerregistry.models import Registry
from prefect import task
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
    registry_id,
    registry_info,
    rotation_identity,
    status_markdown,
)
from byok.azure_errors import is_azure_error, is_propagation_delay, named_failure
from byok.retrying import retry_while, write_or_find
from byok.sdk_values import text
from byok.validation import InvalidRequest, check_name, check_rsa_key_size
from clients.azure import AzureClients
from clients.key_store_access import log_retry
from clients.registries import read_registry, read_settled_registry, require_encrypted_registry
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


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
            on_retry=log_retry(f"registry {name}"),
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
