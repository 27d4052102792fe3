"""Confidential VMs with customer keys through the real SDKs: exportable keys and release
policies (Key Vault's SKR rules), a ConfidentialVmEncryptedWithCustomerKey set, the
Confidential VM Orchestrator's key access, and the offline rotation rule: the set's key
changes only while every VM on it is deallocated. Secure key release (`release_key`): the
release role on the key (Key Vault Crypto Service Release User on an RBAC vault, Managed HSM
Crypto Service Release User at an HSM key's scope), an exportable key, a satisfied policy."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.keyvault.administration import KeyVaultRoleScope
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
from cryptography.hazmat.primitives.asymmetric import rsa

from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from tests.conftest import emulator_credentials
from tests.emulator.test_managed_hsm import CRYPTO_USER, DEFINITIONS, access_control, activated_hsm
from tests.helpers import gallery_image, managed_image, vault_parameters

GROUP = "rg-cvm"
ORCHESTRATOR = "bf7b6499-ff71-4aa2-97a4-f372087be7f0"
CVM = "ConfidentialVmEncryptedWithCustomerKey"
RELEASE_USER = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"  # Key Vault Crypto Service Release User
HSM_RELEASE_USER = "21dbd100-6940-42c2-9190-5d6cb909625c"
AUTHORITY = "https://sharedeus.eus.attest.azure.net/"
POLICY = KeyReleasePolicy(
    json.dumps(
        {
            "version": "1.0.0",
            "anyOf": [
                {
                    "authority": AUTHORITY,
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


def attestation(issuer: str = AUTHORITY, tee: str = "sevsnpvm") -> str:
    """An attestation token (a JWT; the emulator reads its claims, not its signature)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": issuer, "x-ms-isolation-tee": {"x-ms-attestation-type": tee}}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def released_kid(value: str) -> str:
    payload = value.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["response"][
        "key"
    ]["kid"]


def as_principal(emulator: Emulator, name: str) -> tuple[Principal, AzureClients]:
    principal = emulator.state.add_service_principal(name=name)
    credentials = emulator_credentials(
        emulator, client_id=principal.client_id, client_secret=principal.secret
    )
    return principal, AzureClients(credentials)


def test_release_from_an_rbac_vault_needs_the_release_role_on_that_key(
    azure: AzureClients, emulator: Emulator
) -> None:
    azure.resources().resource_groups.create_or_update(GROUP, {"location": "westeurope"})
    params = vault_parameters(emulator, rbac=True)
    params.properties.sku = Sku(family="A", name="premium")
    vault = (
        azure.keyvault_management().vaults.begin_create_or_update(GROUP, "kv-cvm", params).result()
    )
    emulator.state.grant_role(
        emulator.state.service_principal.object_id, "Key Vault Crypto Officer", str(vault.id)
    )
    keys = azure.keys(str(vault.properties.vault_uri))
    key = keys.create_rsa_key(
        "cvm-key", size=2048, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    keys.create_rsa_key(
        "other", size=2048, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    orchestrator, as_orchestrator = as_principal(emulator, "orchestrator")
    its_keys = as_orchestrator.keys(str(vault.properties.vault_uri))
    denied = error_of(lambda: its_keys.release_key("cvm-key", attestation()))
    assert denied.status_code == 403
    assert "'Microsoft.KeyVault/vaults/keys/release/action'" in denied.message

    definition = azure.authorization().role_definitions.get(str(vault.id), RELEASE_USER)
    assert definition.role_name == "Key Vault Crypto Service Release User"
    assert definition.permissions[0].data_actions == [
        "Microsoft.KeyVault/vaults/keys/release/action"
    ]
    azure.authorization().role_assignments.create(
        f"{vault.id}/keys/cvm-key",
        str(uuid.uuid4()),
        {"role_definition_id": definition.id, "principal_id": orchestrator.object_id},
    )
    released = its_keys.release_key("cvm-key", attestation(), version=key.properties.version)
    assert released_kid(released.value) == key.id
    assert released_kid(its_keys.release_key("cvm-key", attestation()).value) == key.id
    unmet = error_of(lambda: its_keys.release_key("cvm-key", attestation(tee="vbs")))
    assert unmet.status_code == 403 and "does not satisfy the key's release policy" in unmet.message
    elsewhere = error_of(lambda: its_keys.release_key("cvm-key", attestation("https://x.test")))
    assert elsewhere.status_code == 403
    # the grant is on one key: not on the vault's other keys, and release only (no get)
    assert error_of(lambda: its_keys.release_key("other", attestation())).status_code == 403
    assert error_of(lambda: its_keys.get_key("cvm-key")).status_code == 403


def test_release_from_a_managed_hsm_needs_its_local_release_role_at_the_key(
    azure: AzureClients, emulator: Emulator
) -> None:
    officers = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
    hsm = activated_hsm(azure, emulator, officers)
    uri = str(hsm.properties.hsm_uri)
    rbac = access_control(azure, emulator, uri)
    me = emulator.state.service_principal.object_id
    rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, DEFINITIONS + CRYPTO_USER, me)
    keys = azure.keys(uri)
    key = keys.create_rsa_key(
        "cvm-key", size=2048, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    keys.create_rsa_key("plain", size=2048, hardware_protected=True)
    orchestrator, as_orchestrator = as_principal(emulator, "orchestrator")
    its_keys = as_orchestrator.keys(uri)
    denied = error_of(lambda: its_keys.release_key("cvm-key", attestation()))
    assert denied.status_code == 403 and "managedHsm/keys/release/action" in denied.message

    role = rbac.get_role_definition(KeyVaultRoleScope.GLOBAL, HSM_RELEASE_USER)
    assert role.role_name == "Managed HSM Crypto Service Release User"
    assert role.permissions[0].data_actions == ["Microsoft.KeyVault/managedHsm/keys/release/action"]
    for name in ("cvm-key", "plain"):
        rbac.create_role_assignment(f"/keys/{name}", role.id, orchestrator.object_id)
    assert released_kid(its_keys.release_key("cvm-key", attestation()).value) == key.id
    not_exportable = error_of(lambda: its_keys.release_key("plain", attestation()))
    assert not_exportable.status_code == 400 and "not exportable" in not_exportable.message
    assert error_of(lambda: its_keys.get_key("cvm-key")).status_code == 403
