"""Container registries as the registry task modules read and change them: the registry (once
no operation runs on it), one that must be encrypted, a PATCH that survives a lost answer, its
user-assigned identities, and whether the ARM template's resources are in place."""

from __future__ import annotations

from collections.abc import Callable

from azure.mgmt.containerregistry.models import Registry, RegistryUpdateParameters

from byok.acr_models import (
    check_existing_registry,
    encryption_status,
    key_changes,
    key_update,
    registry_id,
    registry_key_state,
)
from byok.azure_errors import is_lost_answer, is_propagation_delay, named_failure, or_none
from byok.key_store import KeyStore
from byok.outcomes import Change
from byok.polling import poll_read, read_settled
from byok.retrying import retry_while, write_or_find
from byok.sdk_values import text
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from clients.key_store_access import holds_service_key_use, log_retry


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


def patch_registry(
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


def set_registry_key(
    clients: AzureClients,
    resource_group: str,
    name: str,
    key_id: str,
    identity: str | None,
    timeout_seconds: float,
) -> tuple[Registry, list[Change]]:
    """Encrypt the registry with `key_id` through `identity` (a client id, `system`, or None:
    the identity it uses now), refusals retried while a grant propagates, up to
    `timeout_seconds`; nothing when it uses them already. Returns the registry as last read
    (after the update, if any) and what changed."""
    found = clients.container_registry().registries.get(resource_group, name)
    current = encryption_status(found)
    diff = key_changes(current, key_id, identity)
    if not diff:
        return found, []
    identity = identity or str(current.identity)
    update = key_update(key_id, identity)

    def done(registry: Registry) -> bool:
        status = encryption_status(registry)
        return (status.key_identifier, status.identity) == (key_id, identity)

    target = registry_id(clients.subscription_id, resource_group, name)
    with named_failure(target, "key rotation", waited=True):
        rotated = retry_while(
            lambda: patch_registry(clients, resource_group, name, update, done),
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=log_retry(f"key rotation of {name}"),
        )
    return rotated, diff


def await_registry_key(
    clients: AzureClients,
    resource_group: str,
    name: str,
    versioned_key_id: str,
    timeout_seconds: float,
    poll_seconds: float,
    seen: Registry | None = None,
) -> Registry:
    """The registry once it reports encryption enabled with `versioned_key_id`, read every
    `poll_seconds`, starting from `seen` (the registry as the caller's update left it: no
    read when it is done already)."""
    registries = clients.container_registry().registries
    return poll_read(
        lambda: registries.get(resource_group, name),
        lambda registry: registry_key_state(registry, versioned_key_id),
        seen=seen,
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Registry {name}",
    )


def assigned_identities(clients: AzureClients, resource_group: str, name: str) -> set[str]:
    """The ids (lower case) of the user-assigned identities the registry has."""
    identity = clients.container_registry().registries.get(resource_group, name).identity
    return {k.lower() for k in (identity.user_assigned_identities or {})} if identity else set()


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
