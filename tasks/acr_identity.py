"""A registry's identities: the user-assigned identity it is created with, its
system-assigned identity turned on, and user-assigned identities assigned and removed (`az acr
identity assign/remove`)."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.containerregistry.models import Registry, RegistryUpdateParameters
from prefect import task

from blocks.azure import AzureCredentials
from byok.acr_models import IdentityInfo, identities, identity_note, registry_id
from byok.azure_errors import is_azure_error, or_none
from byok.retrying import write_or_find
from clients.azure import AzureClients
from clients.registries import assigned_identities, patch_registry
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


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
    patched = patch_registry(
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


reassign_user_identity = assign_user_identity.with_options(name="Re-assign the identity")
