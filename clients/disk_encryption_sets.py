"""Disk encryption set helpers over the compute SDK: reads (settled), PATCHes that survive a
lost answer, and the wait for a set to report a key as active with its disks re-wrapped."""

from __future__ import annotations

from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    DiskEncryptionSetUpdate,
    DiskEncryptionSetUpdateProperties,
    KeyForDiskEncryptionSet,
)

from byok.azure_errors import is_lost_answer, named_failure, or_none
from byok.disk_encryption_set_models import des_id, des_key_state
from byok.polling import poll_read, read_settled
from byok.retrying import write_or_find
from byok.sdk_values import text
from clients.azure import AzureClients


def read_des(clients: AzureClients, resource_group: str, name: str) -> DiskEncryptionSet | None:
    """The set, or None."""
    return or_none(lambda: clients.compute().disk_encryption_sets.get(resource_group, name))


def des_state(des: DiskEncryptionSet) -> str | None:
    """Its provisioning state (None: it reports none)."""
    state = des.properties.provisioning_state if des.properties else None
    return text(state) if state else None


def read_settled_des(
    clients: AzureClients, resource_group: str, name: str
) -> DiskEncryptionSet | None:
    """The set once no operation on it is running (None: it does not exist)."""
    return read_settled(
        lambda: read_des(clients, resource_group, name),
        des_state,
        timeout_seconds=600,
        interval_seconds=clients.block.polling_interval_seconds,
        what=f"Disk encryption set {name}",
    )


def patch_des(
    clients: AzureClients,
    resource_group: str,
    name: str,
    properties: DiskEncryptionSetUpdateProperties,
) -> DiskEncryptionSet:
    """PATCH the set; a lost answer is followed by a read, not a second PATCH. Returns the
    set as the operation's final read reports it."""
    sets = clients.compute().disk_encryption_sets
    wanted = properties.active_key.key_url if properties.active_key else None

    def applied() -> DiskEncryptionSet | None:
        found = read_settled_des(clients, resource_group, name)
        if found is None or des_state(found) != "Succeeded" or found.properties is None:
            return None
        active = found.properties.active_key
        return found if active is not None and active.key_url == wanted else None

    return write_or_find(
        lambda: sets.begin_update(
            resource_group, name, DiskEncryptionSetUpdate(properties=properties)
        ).result(),
        applied,
        is_lost_answer,
    )


def patch_des_key(
    clients: AzureClients, resource_group: str, name: str, key_url: str
) -> DiskEncryptionSet:
    """Point the set at `key_url` (Azure re-wraps the disks' keys); a refusal names the set."""
    properties = DiskEncryptionSetUpdateProperties(
        active_key=KeyForDiskEncryptionSet(key_url=key_url)
    )
    with named_failure(des_id(clients.subscription_id, resource_group, name), "updating the key"):
        return patch_des(clients, resource_group, name, properties)


def await_des_key(
    clients: AzureClients,
    resource_group: str,
    name: str,
    key_url: str,
    timeout_seconds: float,
    poll_seconds: float,
    seen: DiskEncryptionSet | None = None,
) -> DiskEncryptionSet:
    """The set once it reports `key_url` active with re-wrapping done (empty previousKeys),
    read every `poll_seconds`, starting from `seen` (the set as the caller's update left it:
    no read when it is done already); OperationFailed on an automatic-rotation error."""
    sets = clients.compute().disk_encryption_sets
    return poll_read(
        lambda: sets.get(resource_group, name),
        lambda des: des_key_state(des, key_url),
        seen=seen,
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Disk encryption set {name}",
    )
