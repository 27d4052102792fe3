"""Managed HSM through the real SDKs: the ARM resource (azure-mgmt-keyvault), activation by
security domain download (REST, no SDK in azure-keyvault-administration 4.7.2), local RBAC
(KeyVaultAccessControlClient), HSM keys (KeyClient) and disk encryption sets on HSM keys."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
from azure.keyvault.keys import KeyType
from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    DiskEncryptionSetUpdate,
    EncryptionSetIdentity,
    KeyForDiskEncryptionSet,
)
from azure.mgmt.containerregistry.models import (
    EncryptionProperty,
    IdentityProperties,
    KeyVaultProperties,
    Registry,
    Sku,
    UserIdentityProperties,
)
from azure.mgmt.keyvault.models import ManagedHsm, ManagedHsmProperties, ManagedHsmSku
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from clients.azure import AzureClients
from console.demo_key_sources import officer_certificate
from emulator.server import Emulator

HSM_SCOPE = "https://managedhsm.azure.net/.default"
CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
SERVICE_ENCRYPTION_USER = "33413926-3206-4cdd-b39a-83574fe37a17"
DEFINITIONS = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"


@pytest.fixture(scope="module")
def wrapping_keys() -> list[rsa.RSAPrivateKey]:
    """Three RSA key pairs, the security domain's wrapping certificates."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


def create_hsm(
    azure: AzureClients, emulator: Emulator, name: str = "hsm1", create_mode: str | None = None
) -> ManagedHsm:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    admin = emulator.state.service_principal.object_id
    return (
        azure.keyvault_management()
        .managed_hsms.begin_create_or_update(
            "rg",
            name,
            ManagedHsm(
                location="westeurope",
                sku=ManagedHsmSku(family="B", name="Standard_B1"),
                properties=ManagedHsmProperties(
                    tenant_id=emulator.identity.tenant_id,
                    initial_admin_object_ids=[admin],
                    create_mode=create_mode,
                ),
            ),
        )
        .result()
    )


def download_domain(
    azure: AzureClients, emulator: Emulator, hsm_uri: str, certificates: list[dict[str, Any]]
) -> requests.Response:
    token = azure.credential.get_token(HSM_SCOPE).token
    return requests.post(
        f"{hsm_uri}securitydomain/download?api-version=7.4",
        json={"certificates": [{"value": c} for c in certificates], "required": 2},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )


def access_control(azure: AzureClients, emulator: Emulator, hsm_uri: str):
    return KeyVaultAccessControlClient(
        hsm_uri,
        azure.credential,
        verify_challenge_resource=False,
        connection_verify=str(emulator.ca_path),
    )


def activated_hsm(
    azure: AzureClients, emulator: Emulator, keys: list[rsa.RSAPrivateKey]
) -> ManagedHsm:
    hsm = create_hsm(azure, emulator)
    certs = [officer_certificate(k, f"sd{i}") for i, k in enumerate(keys)]
    assert download_domain(azure, emulator, hsm.properties.hsm_uri, certs).status_code == 202
    return hsm


def test_new_hsm_refuses_keys_until_its_security_domain_is_downloaded(
    azure: AzureClients, emulator: Emulator, wrapping_keys: list[rsa.RSAPrivateKey]
) -> None:
    hsm = create_hsm(azure, emulator)
    props = hsm.properties
    assert props.provisioning_state == "Succeeded" and props.hsm_uri.startswith("https://127.")
    assert props.security_domain_properties.activation_status == "NotActivated"
    keys = azure.keys(props.hsm_uri)
    with pytest.raises(HttpResponseError) as refused:
        keys.create_rsa_key("early", hardware_protected=True)
    assert refused.value.status_code == 403 and "not activated" in refused.value.message
    challenge = emulator.requests.find("POST", r"/keys/early/create$")[0]
    assert challenge.status == 401  # answered with the HSM's challenge, then the token

    certs = [officer_certificate(k, f"sd{i}") for i, k in enumerate(wrapping_keys)]
    too_few = download_domain(azure, emulator, props.hsm_uri, certs[:2])
    assert too_few.status_code == 400 and "3 to 10 certificates" in too_few.text
    answer = download_domain(azure, emulator, props.hsm_uri, certs)
    assert answer.status_code == 202, answer.text
    assert answer.headers["Azure-AsyncOperation"].endswith("/securitydomain/download/pending")
    domain = json.loads(base64.urlsafe_b64decode(answer.json()["value"] + "=="))
    assert domain["required"] == 2 and [s["kid"] for s in domain["shares"]] == ["sd0", "sd1", "sd2"]
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    share = base64.urlsafe_b64decode(domain["shares"][0]["enc_share"] + "==")
    assert len(wrapping_keys[0].decrypt(share, oaep)) == 66  # the holder's share, unwrapped
    with pytest.raises(ValueError):  # not the others'
        wrapping_keys[1].decrypt(share, oaep)
    again = download_domain(azure, emulator, props.hsm_uri, certs)
    assert again.status_code == 409

    shown = azure.keyvault_management().managed_hsms.get("rg", "hsm1")
    assert shown.properties.security_domain_properties.activation_status == "Active"


def test_local_rbac_decides_key_operations_at_hsm_and_key_scope(
    azure: AzureClients, emulator: Emulator, wrapping_keys: list[rsa.RSAPrivateKey]
) -> None:
    hsm = activated_hsm(azure, emulator, wrapping_keys)
    uri = hsm.properties.hsm_uri
    keys, rbac = azure.keys(uri), access_control(azure, emulator, uri)
    me = emulator.state.service_principal.object_id
    with pytest.raises(HttpResponseError) as refused:  # Administrator: no key management
        keys.create_rsa_key("k1", hardware_protected=True)
    assert refused.value.status_code == 403
    assert "managedHsm/keys/create on /keys/k1" in refused.value.message

    names = {d.role_name for d in rbac.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
    assert {
        "Managed HSM Administrator",
        "Managed HSM Crypto User",
        "Managed HSM Crypto Service Encryption User",
    } <= names
    definition = DEFINITIONS + CRYPTO_USER
    assignment = rbac.create_role_assignment("/keys/k1", definition, me)
    assert assignment.properties.scope == "/keys/k1"
    created = keys.create_rsa_key("k1", size=3072, hardware_protected=True)
    assert created.key_type == KeyType.rsa_hsm and len(created.key.n) == 384
    with pytest.raises(HttpResponseError) as other_key:  # granted on k1 only
        keys.create_ec_key("k2", hardware_protected=True)
    assert other_key.value.status_code == 403

    rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, definition, me)
    assert keys.create_ec_key("k2", curve="P-384", hardware_protected=True).key.crv == "P-384"
    assert keys.create_oct_key("k3", size=256, hardware_protected=True).key_type == "oct-HSM"
    with pytest.raises(HttpResponseError) as software:
        keys.create_rsa_key("soft", size=2048)
    assert software.value.status_code == 400 and "HSM-protected keys only" in software.value.message
    listed = [a.properties.scope for a in rbac.list_role_assignments(KeyVaultRoleScope.GLOBAL)]
    assert sorted(listed) == ["/", "/"]  # the initial administrator's and the Crypto User's


def test_disk_encryption_set_uses_an_hsm_key_with_the_role_at_key_scope(
    azure: AzureClients, emulator: Emulator, wrapping_keys: list[rsa.RSAPrivateKey]
) -> None:
    hsm = activated_hsm(azure, emulator, wrapping_keys)
    uri = hsm.properties.hsm_uri
    keys, rbac = azure.keys(uri), access_control(azure, emulator, uri)
    me = emulator.state.service_principal.object_id
    rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, DEFINITIONS + CRYPTO_USER, me)
    first = keys.create_rsa_key("des-key", size=2048, hardware_protected=True)
    keys.create_rsa_key("other", size=2048, hardware_protected=True)
    compute = azure.compute()
    des = compute.disk_encryption_sets.begin_create_or_update(
        "rg",
        "des1",
        DiskEncryptionSet(
            location="westeurope",
            identity=EncryptionSetIdentity(type="SystemAssigned"),
            properties={"activeKey": KeyForDiskEncryptionSet(key_url=first.id)},
        ),
    ).result()
    assert des.active_key.key_url == first.id
    assert des.active_key.source_vault.id == hsm.id
    second = keys.rotate_key("des-key")
    update = DiskEncryptionSetUpdate(
        properties={"activeKey": KeyForDiskEncryptionSet(key_url=second.id)}
    )
    principal = des.identity.principal_id
    rbac.create_role_assignment("/keys/other", DEFINITIONS + SERVICE_ENCRYPTION_USER, principal)
    with pytest.raises(HttpResponseError) as refused:  # the role is on another key
        compute.disk_encryption_sets.begin_update("rg", "des1", update).result()
    assert refused.value.error.code == "KeyVaultAccessForbidden"
    assert "Managed HSM Crypto Service Encryption User" in refused.value.message
    rbac.create_role_assignment("/keys/des-key", DEFINITIONS + SERVICE_ENCRYPTION_USER, principal)
    rotated = compute.disk_encryption_sets.begin_update("rg", "des1", update).result()
    assert rotated.active_key.key_url == second.id


def test_deleted_hsm_holds_its_name_until_purged(azure: AzureClients, emulator: Emulator) -> None:
    management = azure.keyvault_management()
    hsm = create_hsm(azure, emulator, "hsm-gone")
    management.managed_hsms.begin_delete("rg", "hsm-gone").result()
    deleted = [d.name for d in management.managed_hsms.list_deleted()]
    assert deleted == ["hsm-gone"]
    with pytest.raises(ResourceExistsError):
        create_hsm(azure, emulator, "hsm-gone")
    recovered = create_hsm(azure, emulator, "hsm-gone", create_mode="recover")
    assert recovered.properties.hsm_uri == hsm.properties.hsm_uri  # the same origin and keys
    assert list(management.managed_hsms.list_deleted()) == []
    management.managed_hsms.begin_delete("rg", "hsm-gone").result()
    management.managed_hsms.begin_purge_deleted("hsm-gone", "westeurope").result()
    assert list(management.managed_hsms.list_deleted()) == []
    assert create_hsm(azure, emulator, "hsm-gone").name == "hsm-gone"


def test_registry_uses_an_hsm_key_with_the_role_at_key_scope(
    azure: AzureClients, emulator: Emulator, wrapping_keys: list[rsa.RSAPrivateKey]
) -> None:
    """Registries take Managed HSM keys (the CLI documents it: learn.microsoft.com/cli/azure/
    acr/encryption, rotate-key to https://myhsm.managedhsm.azure.net/keys/mykey)."""
    hsm = activated_hsm(azure, emulator, wrapping_keys)
    uri = hsm.properties.hsm_uri
    keys, rbac = azure.keys(uri), access_control(azure, emulator, uri)
    me = emulator.state.service_principal.object_id
    rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, DEFINITIONS + CRYPTO_USER, me)
    key = keys.create_rsa_key("acr-key", size=2048, hardware_protected=True)
    uai = azure.msi().user_assigned_identities.create_or_update(
        "rg", "acr-id", {"location": "westeurope"}
    )
    registries = azure.container_registry().registries
    body = Registry(
        location="westeurope",
        sku=Sku(name="Premium"),
        identity=IdentityProperties(
            type="UserAssigned", user_assigned_identities={uai.id: UserIdentityProperties()}
        ),
        encryption=EncryptionProperty(
            status="enabled",
            key_vault_properties=KeyVaultProperties(
                key_identifier=str(key.id), identity=uai.client_id
            ),
        ),
    )
    rbac.create_role_assignment(
        "/keys/other", DEFINITIONS + SERVICE_ENCRYPTION_USER, uai.principal_id
    )
    with pytest.raises(HttpResponseError) as refused:
        registries.begin_create("rg", "acrhsm1", body).result()
    assert "lacks key permissions get, unwrapkey, wrapkey" in refused.value.message
    rbac.create_role_assignment(
        "/keys/acr-key", DEFINITIONS + SERVICE_ENCRYPTION_USER, uai.principal_id
    )
    registry = registries.begin_create("rg", "acrhsm1", body).result()
    assert registry.encryption.key_vault_properties.versioned_key_identifier == key.id
