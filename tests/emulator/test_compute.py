"""Disk encryption set rules of the emulator, through the real ComputeManagementClient."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    DiskEncryptionSetUpdate,
    EncryptionSetIdentity,
    KeyForDiskEncryptionSet,
)

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.helpers import arm_request, vault_parameters, vault_with_key


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
