"""Confidential VMs with customer keys through the real SDKs: exportable keys and release
policies (Key Vault's SKR rules), a ConfidentialVmEncryptedWithCustomerKey set, the
Confidential VM Orchestrator's key access, and the offline rotation rule: the set's key
changes only while every VM on it is deallocated."""

from __future__ import annotations

import json

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyReleasePolicy
from azure.mgmt.compute.models import GalleryImageFeature
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    AccessPolicyUpdateKind,
    Permissions,
    Sku,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.helpers import gallery_image, managed_image, vault_parameters

GROUP = "rg-cvm"
ORCHESTRATOR = "bf7b6499-ff71-4aa2-97a4-f372087be7f0"
CVM = "ConfidentialVmEncryptedWithCustomerKey"
POLICY = KeyReleasePolicy(
    json.dumps(
        {
            "version": "1.0.0",
            "anyOf": [
                {
                    "authority": "https://sharedeus.eus.attest.azure.net/",
                    "allOf": [
                        {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"}
                    ],
                }
            ],
        }
    ).encode()
)


def grant(azure: AzureClients, emulator: Emulator, object_id: str, permissions: list[str]) -> None:
    azure.keyvault_management().vaults.update_access_policy(
        GROUP,
        "kv-cvm",
        AccessPolicyUpdateKind.ADD,
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(
                access_policies=[
                    AccessPolicyEntry(
                        tenant_id=emulator.identity.tenant_id,
                        object_id=object_id,
                        permissions=Permissions(keys_property=permissions),
                    )
                ]
            )
        ),
    )


def error_of(call) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as caught:
        call()
    return caught.value


def confidential_vm(azure: AzureClients, name: str, des_id: str, version_id: str):
    return azure.compute().virtual_machines.begin_create_or_update(
        GROUP,
        name,
        {
            "location": "westeurope",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_DC2as_v5"},
                "securityProfile": {
                    "securityType": "ConfidentialVM",
                    "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
                },
                "storageProfile": {
                    "imageReference": {"id": version_id},
                    "osDisk": {
                        "createOption": "FromImage",
                        "managedDisk": {
                            "securityProfile": {
                                "securityEncryptionType": "DiskWithVMGuestState",
                                "diskEncryptionSet": {"id": des_id},
                            }
                        },
                    },
                },
            },
        },
    )


def test_confidential_set_rotates_only_while_every_vm_is_deallocated(
    azure: AzureClients, emulator: Emulator
) -> None:
    azure.resources().resource_groups.create_or_update(GROUP, {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.properties.sku = Sku(family="A", name="premium")
    vault = (
        azure.keyvault_management().vaults.begin_create_or_update(GROUP, "kv-cvm", params).result()
    )
    keys = azure.keys(str(vault.properties.vault_uri))
    no_policy = error_of(lambda: keys.create_rsa_key("k", hardware_protected=True, exportable=True))
    assert "AKV.SKR.1004" in no_policy.message
    not_exportable = error_of(
        lambda: keys.create_rsa_key("k", hardware_protected=True, release_policy=POLICY)
    )
    assert "AKV.SKR.1005" in not_exportable.message
    plain = keys.create_rsa_key("plain", size=2048, hardware_protected=True)
    key = keys.create_rsa_key(
        "cvm-key", size=2048, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    assert key.properties.exportable and json.loads(key.properties.release_policy.encoded_policy)

    sets = azure.compute().disk_encryption_sets

    def des(key_url: str):
        return sets.begin_create_or_update(
            GROUP,
            "des-cvm",
            {
                "location": "westeurope",
                "identity": {"type": "SystemAssigned"},
                "properties": {"activeKey": {"keyUrl": key_url}, "encryptionType": CVM},
            },
        ).result()

    refused = error_of(lambda: des(str(plain.id)))
    assert "needs an exportable RSA-HSM key with a release policy" in refused.message
    des_id = des(str(key.id)).id
    grant(
        azure,
        emulator,
        sets.get(GROUP, "des-cvm").identity.principal_id,
        ["get", "wrapKey", "unwrapKey"],
    )

    source = managed_image(azure, "westeurope", group=GROUP, luns=())
    gallery_image(azure, GROUP)  # no SecurityType feature
    version = (
        azure.compute()
        .gallery_image_versions.begin_create_or_update(
            GROUP,
            "g1",
            "img",
            "1.0.0",
            {
                "location": "westeurope",
                "properties": {
                    "publishingProfile": {"targetRegions": [{"name": "westeurope"}]},
                    "storageProfile": {"source": {"id": source}},
                },
            },
        )
        .result()
    )
    plain_image = error_of(lambda: confidential_vm(azure, "cvm1", des_id, version.id).result())
    assert "SecurityType None; a confidential VM needs" in plain_image.message
    definition = azure.compute().gallery_images.get(GROUP, "g1", "img")
    definition.features = [
        GalleryImageFeature(name="SecurityType", value="ConfidentialVmSupported")
    ]
    azure.compute().gallery_images.begin_create_or_update(GROUP, "g1", "img", definition).result()
    absent = error_of(lambda: confidential_vm(azure, "cvm1", des_id, version.id).result())
    assert "Confidential VM Orchestrator" in absent.message and "not installed" in absent.message
    token = azure.credential.get_token("https://graph.microsoft.com/.default").token
    orchestrator = requests.post(
        f"{emulator.base_url}/v1.0/servicePrincipals",
        json={"appId": ORCHESTRATOR},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    ).json()
    grant(azure, emulator, orchestrator["id"], ["get"])
    lacking = error_of(lambda: confidential_vm(azure, "cvm1", des_id, version.id).result())
    assert "lacks key permissions release" in lacking.message
    grant(azure, emulator, orchestrator["id"], ["release"])
    for name in ("cvm1", "cvm2"):
        confidential_vm(azure, name, des_id, version.id).result()

    compute = azure.compute()
    rotated = keys.rotate_key("cvm-key")
    assert rotated.properties.exportable  # the release policy goes with the new version
    update = {"properties": {"activeKey": {"keyUrl": rotated.id}}}
    running = error_of(lambda: sets.begin_update(GROUP, "des-cvm", update).result())
    assert running.status_code == 409 and "not deallocated: cvm1, cvm2" in running.message
    compute.virtual_machines.begin_deallocate(GROUP, "cvm1").result()
    compute.virtual_machines.begin_power_off(GROUP, "cvm2").result()  # stopped, still allocated
    one_left = error_of(lambda: sets.begin_update(GROUP, "des-cvm", update).result())
    assert "not deallocated: cvm2." in one_left.message
    assert sets.get(GROUP, "des-cvm").active_key.key_url == key.id
    compute.virtual_machines.begin_deallocate(GROUP, "cvm2").result()
    assert sets.begin_update(GROUP, "des-cvm", update).result().active_key.key_url == rotated.id
    view = compute.virtual_machines.get(GROUP, "cvm1", expand="instanceView").instance_view
    assert "PowerState/deallocated" in [s.code for s in view.statuses]
    compute.virtual_machines.begin_start(GROUP, "cvm1").result()
