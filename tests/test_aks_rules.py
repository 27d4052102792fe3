"""The AKS rules that moved out of the flows: which ids name a disk encryption set, and the
KMS settings the enable and rotate flows write."""

from __future__ import annotations

import pytest

from byok.aks_kms import EnableKmsRequest, rotated_kms
from byok.aks_models import (
    AksClusterRequest,
    NodePoolRequest,
    cluster_body,
    des_location,
    pool_body,
)
from byok.errors import InvalidRequest

SUB = "00000000-0000-0000-0000-000000000001"
SET = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets/des"


def test_a_set_id_gives_its_subscription_group_and_name() -> None:
    assert des_location(SET) == (SUB, "rg", "des")
    assert des_location(SET.lower()) == (SUB, "rg", "des")


@pytest.mark.parametrize(
    "wrong",
    [
        "des",
        SET.replace("diskEncryptionSets", "virtualMachines"),
        SET.replace("Microsoft.Compute", "Microsoft.Network"),
        f"{SET}/extensions/x",
    ],
)
def test_other_ids_are_refused_naming_the_field(wrong: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^disk_encryption_set_id = .*not a disk encryption"):
        des_location(wrong)


def test_kms_settings_of_enable_and_rotation() -> None:
    request = EnableKmsRequest(
        azure_credentials_block="b",
        resource_group="rg",
        cluster_name="c",
        key_id="https://kv.vault.azure.net/keys/k/1",
        key_vault_network_access="Private",
        key_vault_resource_id="/v",
    )
    kms = request.kms_profile()
    assert kms == {
        "enabled": True,
        "keyId": "https://kv.vault.azure.net/keys/k/1",
        "keyVaultNetworkAccess": "Private",
        "keyVaultResourceId": "/v",
    }
    new = "https://kv.vault.azure.net/keys/k/2"
    assert rotated_kms(kms, new) == kms | {"keyId": new}  # legacy: the version is named
    versionless = kms | {"keyId": "https://kv.vault.azure.net/keys/k"}
    assert rotated_kms(versionless, new) == versionless  # new experience: AKS follows the key


def test_cluster_and_pool_bodies_are_what_az_aks_sends() -> None:
    request = AksClusterRequest(
        azure_credentials_block="b",
        resource_group="rg",
        location="westeurope",
        cluster_name="aks1",
        disk_encryption_set_id=SET,
        enable_encryption_at_host=True,
    )
    body = cluster_body(request).as_dict()
    assert body["properties"]["diskEncryptionSetID"] == SET
    assert body["properties"]["agentPoolProfiles"] == [
        {"name": "system", "mode": "System", "count": 1, "vmSize": "Standard_DS2_v2",
         "type": "VirtualMachineScaleSets", "osType": "Linux", "osDiskType": "Managed",
         "enableEncryptionAtHost": True}
    ]  # fmt: skip
    pool = NodePoolRequest(
        azure_credentials_block="b",
        resource_group="rg",
        cluster_name="aks1",
        pool_name="user",
        disk_encryption_set_id=SET,
        node_count=2,
    )
    assert pool_body(pool).as_dict() == {
        "properties": {"count": 2, "vmSize": "Standard_DS2_v2", "type": "VirtualMachineScaleSets",
                       "mode": "User", "osType": "Linux", "osDiskType": "Managed",
                       "enableEncryptionAtHost": False}
    }  # fmt: skip
