"""Disk encryption set steps: create (or reconcile) the set, wait until its identity's key
access is effective, rotate its key."""

from __future__ import annotations

from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    DiskEncryptionSetUpdate,
    EncryptionSetIdentity,
    KeyForDiskEncryptionSet,
    SourceVault,
)
from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks.azure import AzureCredentials
from byok.azure_errors import is_propagation_delay, or_none
from byok.polling import poll_until
from byok.retrying import retry_while
from byok.sdk_values import text
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from tasks.key_vault import KeyInfo, VaultInfo
from tasks.retry import STEP_RETRIES


class DiskEncryptionSetInfo(BaseModel):
    """A disk encryption set as later steps and flows need it."""

    id: str
    name: str
    location: str
    key_url: str
    principal_id: str
    encryption_type: str
    rotation_to_latest_key_version: bool


def read_des(clients: AzureClients, resource_group: str, name: str) -> DiskEncryptionSet | None:
    """The set, or None."""
    return or_none(lambda: clients.compute().disk_encryption_sets.get(resource_group, name))


def des_info(des: DiskEncryptionSet) -> DiskEncryptionSetInfo:
    """The typed summary of a set."""
    props = des.properties
    return DiskEncryptionSetInfo(
        id=str(des.id),
        name=str(des.name),
        location=str(des.location),
        key_url=str(props.active_key.key_url),
        principal_id=str(des.identity.principal_id),
        encryption_type=text(props.encryption_type),
        rotation_to_latest_key_version=bool(props.rotation_to_latest_key_version_enabled),
    )


def check_existing_des(des: DiskEncryptionSet, encryption_type: str) -> None:
    """The encryption type of a set cannot change after creation."""
    if text(des.properties.encryption_type) != encryption_type:
        raise InvalidRequest(
            "encryption_type",
            encryption_type,
            f"disk encryption set '{des.name}' already exists with "
            f"{des.properties.encryption_type}, which cannot be changed; "
            "use another name",
        )


@task(name="Create disk encryption set", **STEP_RETRIES)
def ensure_disk_encryption_set(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    location: str,
    vault: VaultInfo,
    key: KeyInfo,
    encryption_type: str,
    auto_rotation: bool,
) -> DiskEncryptionSetInfo:
    """Create the set with the versioned key URL and a system-assigned identity; an existing
    set is left alone when it matches and updated when its key or rotation setting differ."""
    clients = AzureClients(credentials, subscription_id)
    sets = clients.compute().disk_encryption_sets
    existing = read_des(clients, resource_group, name)
    if existing is not None:
        check_existing_des(existing, encryption_type)
        info = des_info(existing)
        failed = text(existing.properties.provisioning_state) == "Failed"
        wanted = (key.id, auto_rotation)
        if (info.key_url, info.rotation_to_latest_key_version) == wanted and not failed:
            get_run_logger().info("Disk encryption set %s already up to date", name)
            return info
    des = sets.begin_create_or_update(
        resource_group,
        name,
        DiskEncryptionSet(
            location=location,
            identity=EncryptionSetIdentity(type="SystemAssigned"),
            properties={
                "activeKey": KeyForDiskEncryptionSet(
                    key_url=key.id, source_vault=SourceVault(id=vault.id)
                ),
                "encryptionType": encryption_type,
                "rotationToLatestKeyVersionEnabled": auto_rotation,
            },
        ),
    ).result()
    get_run_logger().info("Disk encryption set %s uses %s", name, key.id)
    return des_info(des)


@task(name="Wait until the grant is effective", **STEP_RETRIES)
def wait_for_key_access(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    des: DiskEncryptionSetInfo,
    timeout_seconds: float,
) -> None:
    """Azure checks the set's key access whenever its key is applied: re-apply the same key
    until it is accepted (KeyVaultAccessForbidden while the grant propagates)."""
    sets = AzureClients(credentials, subscription_id).compute().disk_encryption_sets
    retry_while(
        lambda: sets.begin_update(
            resource_group,
            des.name,
            DiskEncryptionSetUpdate(
                properties={"activeKey": KeyForDiskEncryptionSet(key_url=des.key_url)}
            ),
        ).result(),
        is_propagation_delay,
        timeout_seconds=timeout_seconds,
        first_delay=2,
        on_retry=lambda exc, wait: get_run_logger().info(
            "Key access of %s not effective yet; retrying in %.1f s", des.name, wait
        ),
    )
    get_run_logger().info("Disk encryption set %s can use its key", des.name)


@task(name="Update the disk encryption set key", **STEP_RETRIES)
def update_des_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    key_url: str,
) -> DiskEncryptionSetInfo:
    """Point the set at a new key version (Azure re-wraps the disks' keys)."""
    sets = AzureClients(credentials, subscription_id).compute().disk_encryption_sets
    des = sets.begin_update(
        resource_group,
        name,
        DiskEncryptionSetUpdate(properties={"activeKey": KeyForDiskEncryptionSet(key_url=key_url)}),
    ).result()
    return des_info(des)


@task(name="Verify the disk encryption set key", **STEP_RETRIES)
def verify_des_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    key_url: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> DiskEncryptionSetInfo:
    """Wait until the set reports `key_url` active with re-wrapping done (empty previousKeys)
    and no automatic-rotation error."""
    sets = AzureClients(credentials, subscription_id).compute().disk_encryption_sets

    def state() -> str:
        props = sets.get(resource_group, name).properties
        if props.auto_key_rotation_error:
            raise RuntimeError(
                f"disk encryption set {name}: automatic key rotation failed: "
                f"{props.auto_key_rotation_error.message}"
            )
        if props.active_key.key_url != key_url:
            return "old key"
        return "re-wrapping" if props.previous_keys else "done"

    poll_until(
        state,
        frozenset({"done"}),
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Disk encryption set {name}",
    )
    return des_info(sets.get(resource_group, name))
