"""Disk encryption set rules of the emulator, through the real ComputeManagementClient."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    DiskEncryptionSetUpdate,
    EncryptionSetIdentity,
    KeyForDiskEncryptionSet,
    SecurityProfile,
)

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.encrypted_vm import encrypted_vm, power_state
from tests.helpers import arm_request, des_in_region, vault_parameters, vault_with_key

DES_TYPE = "microsoft.compute/diskencryptionsets"


def des(key_url: str, location: str = "westeurope", **props: object) -> DiskEncryptionSet:
    return DiskEncryptionSet(
        location=location,
        identity=EncryptionSetIdentity(type="SystemAssigned"),
        properties={"activeKey": KeyForDiskEncryptionSet(key_url=key_url), **props},
    )


def create(azure: AzureClients, body: DiskEncryptionSet, name: str = "des1") -> DiskEncryptionSet:
    return azure.compute().disk_encryption_sets.begin_create_or_update("rg", name, body).result()


def rule_error(azure: AzureClients, body: DiskEncryptionSet) -> str:
    with pytest.raises(HttpResponseError) as info:
        create(azure, body)
    assert info.value.status_code == 400
    return str(info.value)


@pytest.fixture
def key_url(azure: AzureClients, emulator: Emulator) -> str:
    return vault_with_key(azure, emulator)[1]


def test_versionless_key_url_is_refused(azure: AzureClients, key_url: str) -> None:
    assert "must name a key version" in rule_error(azure, des(key_url.rsplit("/", 1)[0]))


def test_vault_in_another_region_is_refused(azure: AzureClients, key_url: str) -> None:
    assert "same region" in rule_error(azure, des(key_url, location="eastus"))


def test_ec_key_is_refused(azure: AzureClients, emulator: Emulator, key_url: str) -> None:
    vault_url = key_url.split("/keys/")[0]
    ec = azure.keys(vault_url).create_ec_key("ec", curve="P-256")
    assert "RSA keys of 2048, 3072 or 4096" in rule_error(azure, des(str(ec.id)))


def test_vault_without_purge_protection_is_accepted(
    azure: AzureClients, emulator: Emulator
) -> None:
    """Azure accepts it (only the docs ask for purge protection); the flows check it."""
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.properties.enable_purge_protection = None
    vault = (
        azure.keyvault_management().vaults.begin_create_or_update("rg", "kv-npp", params).result()
    )
    key = azure.keys(str(vault.properties.vault_uri)).create_rsa_key("k")
    assert key.properties.recovery_level == "Recoverable+Purgeable"
    assert create(azure, des(str(key.id))).provisioning_state == "Succeeded"


def test_missing_key_is_refused(azure: AzureClients, key_url: str) -> None:
    assert "KeyVaultKeyNotFound" in rule_error(azure, des(key_url.replace("des-key", "nope")))


def test_key_change_needs_identity_access(
    azure: AzureClients, emulator: Emulator, key_url: str
) -> None:
    created = create(azure, des(key_url))
    assert created.properties.previous_keys in (None, [])
    new = azure.keys(key_url.split("/keys/")[0]).rotate_key("des-key")
    with pytest.raises(HttpResponseError) as info:
        azure.compute().disk_encryption_sets.begin_update(
            "rg",
            "des1",
            DiskEncryptionSetUpdate(
                properties={"activeKey": KeyForDiskEncryptionSet(key_url=new.id)}
            ),
        ).result()
    assert "KeyVaultAccessForbidden" in str(info.value)
    assert created.identity.principal_id in str(info.value)


def test_encryption_type_cannot_change(
    azure: AzureClients, emulator: Emulator, key_url: str
) -> None:
    create(azure, des(key_url))
    response = arm_request(
        emulator,
        azure,
        "PATCH",
        "/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets/des1",
        {"properties": {"encryptionType": "EncryptionAtRestWithPlatformAndCustomerKeys"}},
        api_version="2026-03-02",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "PropertyChangeNotAllowed"


# -- automatic rotation on the emulator's clock, and revocation ----------------------------------
HOUR = 3600


def _keys(azure: AzureClients, des_id: str):
    vault = azure.keyvault_management().vaults.get("rg-img", "kv-des-we")
    return azure.keys(str(vault.properties.vault_uri))


def _set(azure: AzureClients, des_id: str) -> DiskEncryptionSet:
    return azure.compute().disk_encryption_sets.get("rg-img", des_id.rsplit("/", 1)[1])


def test_automatic_rotation_picks_the_new_version_up_within_an_hour(
    azure: AzureClients, emulator: Emulator
) -> None:
    """With rotationToLatestKeyVersionEnabled the set moves to a new version once the
    emulator's clock passes the pickup delay; a set without it keeps its version."""
    emulator.arm.types[DES_TYPE].hooks.auto_rotation_seconds = HOUR  # type: ignore[attr-defined]
    des_id = des_in_region(azure, emulator, "westeurope", "des-we", "rg-img")
    before = _set(azure, des_id)
    compute = azure.compute().disk_encryption_sets
    compute.begin_update(
        "rg-img", "des-we", DiskEncryptionSetUpdate(rotation_to_latest_key_version_enabled=True)
    ).result()
    fixed = compute.begin_create_or_update(
        "rg-img", "des-fixed", des(before.active_key.key_url)
    ).result()
    new = _keys(azure, des_id).rotate_key("k")
    emulator.state.keyvault.clock.advance(HOUR - 60)  # type: ignore[union-attr]
    assert _set(azure, des_id).active_key.key_url == before.active_key.key_url
    emulator.state.keyvault.clock.advance(120)  # type: ignore[union-attr]
    moved = _set(azure, des_id)
    assert moved.active_key.key_url == new.id
    assert moved.last_key_rotation_timestamp.timestamp() > new.properties.created_on.timestamp()
    assert moved.auto_key_rotation_error is None
    assert _set(azure, str(fixed.id)).active_key.key_url == before.active_key.key_url


@pytest.mark.parametrize("revoke", ["disable", "remove-access"])
def test_automatic_rotation_reports_a_key_it_cannot_use(
    azure: AzureClients, emulator: Emulator, revoke: str
) -> None:
    des_id = des_in_region(azure, emulator, "westeurope", "des-we", "rg-img")
    current = _set(azure, des_id)
    azure.compute().disk_encryption_sets.begin_update(
        "rg-img", "des-we", DiskEncryptionSetUpdate(rotation_to_latest_key_version_enabled=True)
    ).result()
    keys = _keys(azure, des_id)
    new = keys.rotate_key("k")
    if revoke == "disable":
        keys.update_key_properties("k", new.properties.version, enabled=False)
    else:
        _remove_access(azure, emulator, current.identity.principal_id)
    emulator.state.keyvault.clock.advance(HOUR)  # type: ignore[union-attr]
    seen = _set(azure, des_id)
    assert seen.active_key.key_url == current.active_key.key_url
    expected = "KeyVaultKeyDisabled" if revoke == "disable" else "KeyVaultAccessForbidden"
    assert seen.auto_key_rotation_error.code == expected
    if revoke == "disable":  # restored: picked up, the error gone
        keys.update_key_properties("k", new.properties.version, enabled=True)
        seen = _set(azure, des_id)
        assert seen.active_key.key_url == new.id and seen.auto_key_rotation_error is None


def _remove_access(azure: AzureClients, emulator: Emulator, principal: str) -> None:
    from azure.mgmt.keyvault.models import (
        AccessPolicyEntry,
        Permissions,
        VaultAccessPolicyParameters,
        VaultAccessPolicyProperties,
    )

    entry = AccessPolicyEntry(
        tenant_id=emulator.identity.tenant_id,
        object_id=principal,
        permissions=Permissions(keys_property=["get", "wrapKey", "unwrapKey"]),
    )
    azure.keyvault_management().vaults.update_access_policy(
        "rg-img",
        "kv-des-we",
        "remove",
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[entry])
        ),
    )


def test_vm_shuts_down_while_its_key_is_disabled_and_starts_after(
    azure: AzureClients, emulator: Emulator
) -> None:
    """Disabling the key stops the VM (Azure: "any VMs with disks using that key will
    automatically shut down"); it cannot start until the key is enabled, and does not start
    by itself."""
    _, des_id = encrypted_vm(azure, emulator)
    assert power_state(azure) == ("PowerState/running", "")
    keys = _keys(azure, des_id)
    version = _set(azure, des_id).active_key.key_url.rsplit("/", 1)[1]
    keys.update_key_properties("k", version, enabled=False)
    code, message = power_state(azure)
    assert code == "PowerState/stopped" and "KeyVaultKeyDisabled" in message
    vms = azure.compute().virtual_machines
    with pytest.raises(HttpResponseError, match="KeyVaultKeyDisabled") as refused:
        vms.begin_start("rg-img", "vm1").result()
    assert refused.value.status_code == 400
    keys.update_key_properties("k", version, enabled=True)
    assert power_state(azure)[0] == "PowerState/stopped"
    vms.begin_start("rg-img", "vm1").result()
    assert power_state(azure) == ("PowerState/running", "")


def test_a_policy_rotation_is_picked_up_by_the_set(azure: AzureClients, emulator: Emulator) -> None:
    """The key's rotation policy makes a version on day 30 (emulator clock); the set with
    automatic rotation moves to it within the hour after, with lastKeyRotationTimestamp."""
    from azure.keyvault.keys import (
        KeyRotationLifetimeAction,
        KeyRotationPolicy,
        KeyRotationPolicyAction,
    )

    emulator.arm.types[DES_TYPE].hooks.auto_rotation_seconds = HOUR  # type: ignore[attr-defined]
    des_id = des_in_region(azure, emulator, "westeurope", "des-we", "rg-img")
    azure.compute().disk_encryption_sets.begin_update(
        "rg-img", "des-we", DiskEncryptionSetUpdate(rotation_to_latest_key_version_enabled=True)
    ).result()
    keys = _keys(azure, des_id)
    rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")
    keys.update_key_rotation_policy("k", KeyRotationPolicy(lifetime_actions=[rotate]))
    before = _set(azure, des_id).active_key.key_url
    clock = emulator.state.keyvault.clock  # type: ignore[union-attr]
    clock.advance(30 * 86400 + HOUR + 60)
    moved = _set(azure, des_id)
    latest = keys.get_key("k")
    assert moved.active_key.key_url == latest.id != before
    made = latest.properties.created_on.timestamp()
    assert made < moved.last_key_rotation_timestamp.timestamp() <= clock.now()


def test_encryption_at_host_needs_the_subscriptions_feature(
    azure: AzureClients, emulator: Emulator
) -> None:
    """A VM with `securityProfile.encryptionAtHost` is refused until Microsoft.Compute/
    EncryptionAtHost is registered (https://github.com/Azure/azure-cli/issues/16788)."""
    encrypted_vm(azure, emulator)
    vms = azure.compute().virtual_machines
    body = vms.get("rg-img", "vm1")
    body.security_profile = SecurityProfile(encryption_at_host=True)
    body.storage_profile.os_disk.managed_disk.id = None
    body.storage_profile.os_disk.name = None
    with pytest.raises(HttpResponseError) as refused:
        vms.begin_create_or_update("rg-img", "vm-host", body).result()
    assert refused.value.status_code == 400
    assert "'Microsoft.Compute/EncryptionAtHost' feature is not enabled" in str(refused.value)
    emulator.arm.configure_feature("Microsoft.Compute", "EncryptionAtHost", state="Registered")
    made = vms.begin_create_or_update("rg-img", "vm-host", body).result()
    assert made.security_profile.encryption_at_host is True
