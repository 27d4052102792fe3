"""The demo's key sources beyond one vault (issue 21): a disk encryption set whose key lives
in a managed HSM, a cross-tenant set, and a confidential VM's set rotated offline. What a
customer's own officers do first (create and activate the HSM, grant this tool its local
roles) is done here through the SDKs and the HSM's REST API, as they would."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

from byok.outcomes import applied

DEMO_GROUP = "rg-byok-keys"
HSM_NAME = "hsm-byok-demo"
CUSTOMER_BLOCK = "emulator-customer"
# Managed HSM local role definitions (https://learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles)
HSM_CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
HSM_CRYPTO_OFFICER = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
HSM_ROLE_DEFINITIONS = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def officer_certificate(private: Any, name: str) -> dict[str, Any]:
    """A security-domain officer's self-signed certificate for `private` (an RSA key that
    stays with the officer), as a JWK the security domain download takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    numbers = private.public_key().public_numbers()
    return {
        "kty": "RSA",
        "key_ops": ["verify", "encrypt", "wrapKey"],
        "alg": "RSA-OAEP-256",
        "kid": name,
        "x5c": [base64.b64encode(der).decode()],
        "x5t#S256": _b64url(hashlib.sha256(der).digest()),
        "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": _b64url(numbers.e.to_bytes(3, "big")),
    }


def activated_hsm(emulator: Any, clients: Any) -> str:
    """The customer's officers: a managed HSM created, activated by downloading its security
    domain (three officers' certificates, two needed), and this tool granted Managed HSM
    Crypto User and Crypto Officer at `/`. Returns the HSM's URI."""
    import requests
    from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
    from azure.mgmt.keyvault.models import ManagedHsm, ManagedHsmProperties, ManagedHsmSku

    me = emulator.state.service_principal.object_id
    clients.resources().resource_groups.create_or_update(DEMO_GROUP, {"location": "westeurope"})
    hsm = (
        clients.keyvault_management()
        .managed_hsms.begin_create_or_update(
            DEMO_GROUP,
            HSM_NAME,
            ManagedHsm(
                location="westeurope",
                sku=ManagedHsmSku(family="B", name="Standard_B1"),
                properties=ManagedHsmProperties(
                    tenant_id=emulator.identity.tenant_id, initial_admin_object_ids=[me]
                ),
            ),
        )
        .result()
    )
    uri = str(hsm.properties.hsm_uri)
    token = clients.credential.get_token("https://managedhsm.azure.net/.default").token
    from cryptography.hazmat.primitives.asymmetric import rsa

    # the officers' keys stay with them (here: dropped; the demo never uploads the domain)
    officers = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
    certificates = [
        {"value": officer_certificate(k, f"officer-{i}")} for i, k in enumerate(officers)
    ]
    requests.post(  # https://learn.microsoft.com/azure/key-vault/managed-hsm/security-domain
        f"{uri}securitydomain/download?api-version=7.4",
        json={"certificates": certificates, "required": 2},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=30,
    ).raise_for_status()
    rbac = KeyVaultAccessControlClient(
        uri,
        clients.credential,
        verify_challenge_resource=False,
        connection_verify=str(emulator.ca_path),
    )
    for role in (HSM_CRYPTO_USER, HSM_CRYPTO_OFFICER):
        rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, HSM_ROLE_DEFINITIONS + role, me)
    return uri


def hsm_backed_set(emulator: Any, block: str) -> list[str]:
    """An activated HSM, then prepare-disk-encryption-set with its key in the HSM."""
    from clients.azure import AzureClients
    from console.emulator_blocks import emulator_azure_credentials
    from flows.disk_encryption_set import DiskEncryptionSetRequest, prepare_disk_encryption_set

    activated_hsm(emulator, AzureClients.of(emulator_azure_credentials(emulator)))
    prepared = prepare_disk_encryption_set(
        DiskEncryptionSetRequest(
            azure_credentials_block=block,
            resource_group=DEMO_GROUP,
            location="westeurope",
            key_store="managed-hsm",
            hsm_name=HSM_NAME,
            hsm_resource_group=DEMO_GROUP,
            key_name="des-hsm-key",
            des_name="des-hsm-demo",
            propagation_timeout_minutes=1,
        )
    )
    prepared = applied(prepared)
    return [
        f"  H1    managed HSM {HSM_NAME} (activated by its officers), RSA-HSM key "
        f"{prepared.key.name}: disk encryption set {prepared.disk_encryption_set.name} on it, "
        "its identity granted at key scope through the HSM's local RBAC"
    ]


def confidential_image(clients: Any) -> str:
    """A gallery image version allowed for confidential VMs (its definition's SecurityType
    feature `ConfidentialVmSupported`), from a managed image: what a platform team publishes
    before this tool runs. Returns the version's id."""
    compute = clients.compute()
    source = compute.images.begin_create_or_update(
        DEMO_GROUP,
        "cvm-source",
        {
            "location": "westeurope",
            "properties": {
                "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized"}}
            },
        },
    ).result()
    compute.galleries.begin_create_or_update(
        DEMO_GROUP, "gcvm", {"location": "westeurope"}
    ).result()
    compute.gallery_images.begin_create_or_update(
        DEMO_GROUP,
        "gcvm",
        "cvm-img",
        {
            "location": "westeurope",
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "hyperVGeneration": "V2",
                "identifier": {"publisher": "byok", "offer": "demo", "sku": "cvm"},
                "features": [{"name": "SecurityType", "value": "ConfidentialVmSupported"}],
            },
        },
    ).result()
    version = compute.gallery_image_versions.begin_create_or_update(
        DEMO_GROUP,
        "gcvm",
        "cvm-img",
        "1.0.0",
        {
            "location": "westeurope",
            "properties": {
                "publishingProfile": {"targetRegions": [{"name": "westeurope"}]},
                "storageProfile": {"source": {"id": source.id}},
            },
        },
    ).result()
    return str(version.id)


def confidential_vm_rotation(emulator: Any, block: str) -> list[str]:
    """prepare-confidential-vm-encryption with a confidential VM on the set, then one offline
    rotation (the VM deallocated, the key rotated, the VM started again)."""
    from clients.azure import AzureClients
    from console.emulator_blocks import emulator_azure_credentials
    from flows.confidential_vm import (
        ConfidentialRotationRequest,
        ConfidentialVmEncryptionRequest,
        ConfidentialVmSpec,
        prepare_confidential_vm_encryption,
        rotate_confidential_vm_key,
    )

    image = confidential_image(AzureClients.of(emulator_azure_credentials(emulator)))
    prepared = prepare_confidential_vm_encryption(
        ConfidentialVmEncryptionRequest(
            azure_credentials_block=block,
            resource_group=DEMO_GROUP,
            location="westeurope",
            vault_name="kv-cvm-byok-demo",
            key_name="cvm-key",
            attestation_authority="https://sharedweu.weu.attest.azure.net",
            des_name="des-cvm-demo",
            propagation_timeout_minutes=1,
            vm=ConfidentialVmSpec(
                vm_name="cvm-byok-demo",
                image_version_id=image,
                ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYOKdemo byok-demo",
            ),
        )
    )
    prepared = applied(prepared)
    rotated = applied(
        rotate_confidential_vm_key(
            ConfidentialRotationRequest(
                azure_credentials_block=block,
                resource_group=DEMO_GROUP,
                des_name=prepared.disk_encryption_set.name,
                maintenance_window_minutes=30,
                rotation_id="demo-cvm-rotation",
                timeout_minutes=2,
                poll_seconds=0.5,
            )
        )
    )
    return [
        f"  V1    confidential VM {str(prepared.vm_id).rsplit('/', 1)[-1]} "
        f"on set {prepared.disk_encryption_set.name} (exportable RSA-HSM key with the CVM "
        "release policy, Confidential VM Orchestrator granted get/release)",
        f"  V2    offline rotation: {len(rotated.to_stop)} VM(s) deallocated, the set moved "
        f"to key version {str(rotated.new_key).rsplit('/', 1)[-1][:8]}, "
        f"{len(rotated.to_start)} started again",
    ]


def cross_tenant_set(emulator: Any, block: str) -> list[str]:
    """A customer's tenant (its own subscription and a principal with Owner there, saved as a
    second block), then prepare-cross-tenant-disk-encryption-set: this tenant's set encrypted
    with a key in the customer's vault."""
    from console.emulator_blocks import emulator_azure_credentials
    from flows.cross_tenant import CrossTenantDesRequest, prepare_cross_tenant_disk_encryption_set

    state = emulator.state
    tenant = state.add_tenant(name="customer")
    subscription = state.add_subscription(tenant, name="customer prod")
    principal = state.add_service_principal(tenant, "customer-byok")
    for role in ("Owner", "Key Vault Administrator"):
        state.grant_role(principal.object_id, role, f"/subscriptions/{subscription}")
    emulator_azure_credentials(
        emulator,
        tenant_id=tenant,
        client_id=principal.client_id,
        client_secret=principal.secret,
        subscription_id=subscription,
    ).save(CUSTOMER_BLOCK, overwrite=True)
    result = prepare_cross_tenant_disk_encryption_set(
        CrossTenantDesRequest(
            provider_credentials_block=block,
            customer_credentials_block=CUSTOMER_BLOCK,
            app_name="byok-demo-isv",
            resource_group=DEMO_GROUP,
            location="westeurope",
            identity_name="id-xt-byok-demo",
            des_name="des-xt-demo",
            customer_resource_group="rg-customer-keys",
            vault_name="kv-customer-demo",
            key_name="customer-cmk",
            propagation_timeout_minutes=1,
        )
    )
    result = applied(result)
    return [
        f"  X1    cross-tenant set {result.disk_encryption_set.name} in this tenant with key "
        f"{result.key.name} of tenant {tenant} (multi-tenant app with a federated "
        "credential on the set's identity; the customer's grant to the app)"
    ]


def key_sources_demo(emulator: Any, block: str) -> list[str]:
    """The three key sources, each through its flow."""
    return [
        *hsm_backed_set(emulator, block),
        *cross_tenant_set(emulator, block),
        *confidential_vm_rotation(emulator, block),
    ]
