"""A registry's key: rotated (`az acr encryption rotate-key`, also to switch the identity),
verified in use, and its data probed (served while the key is usable, refused once it is
not)."""

from __future__ import annotations

from azure.mgmt.containerregistry.models import Registry
from prefect import task

from blocks.azure import AzureCredentials
from byok.acr_models import (
    EncryptionStatus,
    RegistryInfo,
    encryption_status,
    key_changes,
    key_update,
    registry_id,
    registry_info,
    registry_key_state,
)
from byok.azure_errors import is_propagation_delay, named_failure
from byok.polling import poll_until
from byok.registry_probe import probe_registry_data
from byok.retrying import retry_while
from clients.azure import AzureClients
from clients.key_store_access import log_retry
from clients.registries import patch_registry
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


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
    return encryption_status(
        point_registry_key(clients, resource_group, name, key_id, identity, timeout_seconds)
    )


def point_registry_key(
    clients: AzureClients,
    resource_group: str,
    name: str,
    key_id: str,
    identity: str | None,
    timeout_seconds: float,
) -> Registry:
    """`rotate_registry_key`'s work; the registry as last read (after the update, if any)."""
    target = registry_id(clients.subscription_id, resource_group, name)
    found = clients.container_registry().registries.get(resource_group, name)
    current = encryption_status(found)
    diff = key_changes(current, key_id, identity)
    if not diff:
        report(target, None, note=f"key {key_id}, identity {current.identity}")
        return found
    identity = identity or str(current.identity)
    update = key_update(key_id, identity)

    def done(registry: Registry) -> bool:
        status = encryption_status(registry)
        return (status.key_identifier, status.identity) == (key_id, identity)

    with named_failure(target, "key rotation", waited=True):
        rotated = retry_while(
            lambda: patch_registry(clients, resource_group, name, update, done),
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=log_retry(f"key rotation of {name}"),
        )
    report(target, "update", changes=diff)
    return rotated


switch_to_system_identity = rotate_registry_key.with_options(
    name="Switch encryption to the system identity"
)


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
    return registry_info(
        await_registry_key(
            clients, resource_group, name, versioned_key_id, timeout_seconds, poll_seconds
        )
    )


def await_registry_key(
    clients: AzureClients,
    resource_group: str,
    name: str,
    versioned_key_id: str,
    timeout_seconds: float,
    poll_seconds: float,
    seen: Registry | None = None,
) -> Registry:
    """`verify_registry_key`'s work, starting from `seen` (the registry as the caller's
    update left it: one read fewer when it is already done); the registry as last read."""
    registries = clients.container_registry().registries
    given = [] if seen is None else [seen]
    last: list[Registry] = []

    def state() -> str:
        last[:] = [given.pop() if given else registries.get(resource_group, name)]
        return registry_key_state(last[0], versioned_key_id)

    poll_until(
        state,
        frozenset({"done"}),
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Registry {name}",
    )
    report(str(last[0].id), "verify", note=f"key {versioned_key_id}")
    return last[0]


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
        log_retry(f"data of {name}"),
    )
    report(
        target, "verify", note="data accessible" if answer == "ok" else f"data refused: {answer}"
    )
    return answer


prove_data_refused = probe_registry.with_options(name="Prove registry data is inaccessible")


prove_data_served = probe_registry.with_options(name="Prove registry data is accessible")
