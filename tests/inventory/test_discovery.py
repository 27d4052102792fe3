"""Resource Graph rows become findings down to regions, LUNs and disks."""

from __future__ import annotations

from byok.inventory.discovery import (
    discovery_query,
    findings,
    key_urls,
    set_ids,
    vault_for,
    vaults_by_uri,
)
from byok.inventory.models import KeyState, Kind

SUB = "sub-1"
RG = f"/subscriptions/{SUB}/resourceGroups/rg/providers"
DES_ID = f"{RG}/Microsoft.Compute/diskEncryptionSets/des1"
KEY = "https://kv1.vault.azure.net/keys/k1/0123"
DES = {
    "id": DES_ID,
    "type": "microsoft.compute/diskencryptionsets",
    "subscriptionId": SUB,
    "location": "westeurope",
    "identity": {"principalId": "p-1"},
    "properties": {
        "activeKey": {"keyUrl": KEY},
        "encryptionType": "EncryptionAtRestWithCustomerKey",
        "lastKeyRotationTimestamp": "2026-11-01T00:00:00Z",
    },
}


def keys(url: str) -> KeyState:
    return KeyState(key_id=url, version=url.rsplit("/", 1)[-1])


def find(row: dict) -> list:
    return list(findings(row, set_ids([DES]), keys))


def test_a_set_carries_its_key_and_last_rotation() -> None:
    (des,) = find(DES)
    assert (des.kind, des.customer_key, des.identity) == (Kind.DISK_ENCRYPTION_SET, True, "p-1")
    assert des.key is not None and des.key.version == "0123"
    assert des.key.last_rotation is not None and des.key.last_rotation.month == 11


def test_disks_vms_and_image_versions_resolve_their_sets_per_part() -> None:
    platform_disk = {
        "id": f"{RG}/Microsoft.Compute/disks/d0",
        "type": "microsoft.compute/disks",
        "subscriptionId": SUB,
        "properties": {"encryption": {"type": "EncryptionAtRestWithPlatformKey"}},
    }
    (disk,) = find(platform_disk)
    assert not disk.customer_key and disk.encryption_type == "EncryptionAtRestWithPlatformKey"
    vm = {
        "id": f"{RG}/Microsoft.Compute/virtualMachines/vm1",
        "type": "Microsoft.Compute/virtualMachines",
        "subscriptionId": SUB,
        "properties": {
            "storageProfile": {
                "osDisk": {"managedDisk": {"diskEncryptionSet": {"id": DES_ID.upper()}}},
                "dataDisks": [{"lun": 0, "managedDisk": {}}],
            }
        },
    }
    parts = {f.part: f for f in find(vm)}
    assert parts["os-disk"].customer_key and parts["os-disk"].key.key_id == KEY
    assert not parts["lun-0"].customer_key
    version = {
        "id": f"{RG}/Microsoft.Compute/galleries/g/images/i/versions/1.0.0",
        "type": "microsoft.compute/galleries/images/versions",
        "subscriptionId": SUB,
        "properties": {
            "publishingProfile": {
                "targetRegions": [
                    {
                        "name": "West Europe",
                        "encryption": {
                            "osDiskImage": {"diskEncryptionSetId": DES_ID},
                            "dataDiskImages": [{"lun": 1, "diskEncryptionSetId": DES_ID}],
                        },
                    },
                    {"name": "eastus"},
                ]
            }
        },
    }
    by_part = {f.part: f.customer_key for f in find(version)}
    assert by_part == {
        "westeurope/os-disk": True,
        "westeurope/lun-1": True,
        "eastus/os-disk": False,
    }


def test_registries_and_clusters() -> None:
    registry = {
        "id": f"{RG}/Microsoft.ContainerRegistry/registries/r1",
        "type": "microsoft.containerregistry/registries",
        "subscriptionId": SUB,
        "properties": {
            "encryption": {
                "status": "enabled",
                "keyVaultProperties": {
                    "keyIdentifier": "https://kv1.vault.azure.net/keys/k1",
                    "versionedKeyIdentifier": KEY,
                    "identity": "client-1",
                },
            }
        },
    }
    (reg,) = find(registry)
    assert reg.customer_key and reg.key.key_id == KEY and reg.identity == "client-1"
    cluster = {
        "id": f"{RG}/Microsoft.ContainerService/managedClusters/aks1",
        "type": "microsoft.containerservice/managedclusters",
        "subscriptionId": SUB,
        "properties": {
            "diskEncryptionSetID": DES_ID,
            "securityProfile": {"azureKeyVaultKms": {"enabled": True, "keyId": KEY}},
        },
    }
    assert {f.part for f in find(cluster)} == {"node-os-disks", "kms-etcd"}
    assert key_urls([DES, registry, cluster]) == {KEY}


def test_vaults_are_found_by_the_key_url_origin() -> None:
    vault = {
        "id": f"{RG}/Microsoft.KeyVault/vaults/kv1",
        "type": "microsoft.keyvault/vaults",
        "properties": {"vaultUri": "https://KV1.vault.azure.net/"},
    }
    assert vault_for(KEY, vaults_by_uri([vault])) is vault
    assert find(vault) == []
    assert "'microsoft.keyvault/vaults'" in discovery_query()
