"""A registry's key: rotated (`az acr encryption rotate-key`, also to switch the identity),
verified in use, and its data probed (served while the key is usable, refused once it is
not)."""

from __future__ import annotations

from prefect import task

from blocks.azure import AzureCredentials
from byok.acr_models import (
    EncryptionStatus,
    RegistryInfo,
    encryption_status,
    registry_id,
    registry_info,
)
from byok.registry_probe import probe_registry_data
from clients.azure import AzureClients
from clients.key_store_access import log_retry
from clients.registries import await_registry_key, set_registry_key
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
    target = registry_id(clients.subscription_id, resource_group, name)
    registry, diff = set_registry_key(
        clients, resource_group, name, key_id, identity, timeout_seconds
    )
    status = encryption_status(registry)
    if diff:
        report(target, "update", changes=diff)
    else:
        report(target, None, note=f"key {key_id}, identity {status.identity}")
    return status


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
    verified = registry_info(
        await_registry_key(
            clients, resource_group, name, versioned_key_id, timeout_seconds, poll_seconds
        )
    )
    report(verified.id, "verify", note=f"key {versioned_key_id}")
    return verified


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
