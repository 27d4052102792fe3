"""The inventory of the key sources beyond one vault: a set on a managed HSM key (store kind
and tenant), a cross-tenant set (its app, and its key's tenant, read from the customer
vault's authentication challenge: the provider cannot read the key), a confidential VM set
(its type, the confidential VMs and their disks, and the VMs that keep its key from
changing: those not deallocated, by the power state of Resource Graph's VM rows)."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from azure.keyvault.administration import KeyVaultRoleScope
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
from flows.inventory import InventoryRequest, inventory_customer_managed_keys
from tests.conftest import emulator_credentials
from tests.emulator.test_confidential import CVM, GROUP, ORCHESTRATOR, POLICY, confidential_vm
from tests.emulator.test_confidential import grant as grant_policy
from tests.emulator.test_cross_tenant import graph
from tests.emulator.test_managed_hsm import CRYPTO_USER, DEFINITIONS, access_control, activated_hsm
from tests.helpers import gallery_image, managed_image, vault_parameters


def hsm_set(azure: AzureClients, emulator: Emulator, reader: str) -> str:
    """A set on a managed HSM key the inventory's principal may read; returns the HSM's id."""
    keys_pair = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
    hsm = activated_hsm(azure, emulator, keys_pair)
    uri = hsm.properties.hsm_uri
    rbac = access_control(azure, emulator, uri)
    for principal in (emulator.state.service_principal.object_id, reader):
        rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, DEFINITIONS + CRYPTO_USER, principal)
    key = azure.keys(uri).create_rsa_key("hsm-key", size=2048, hardware_protected=True)
    azure.compute().disk_encryption_sets.begin_create_or_update(
        "rg",
        "des-hsm",
        {
            "location": "westeurope",
            "identity": {"type": "SystemAssigned"},
            "properties": {"activeKey": {"keyUrl": key.id}},
        },
    ).result()
    return str(hsm.id)


def cross_tenant_set(azure: AzureClients, emulator: Emulator) -> tuple[str, str]:
    """A set whose key is in a customer tenant's vault, reached through the provider's
    multi-tenant app federated with the set's identity; returns (app id, customer tenant)."""
    state = emulator.state
    tenant = state.add_tenant(name="customer")
    admin = state.add_service_principal(tenant, "customer-admin")
    sub = state.add_subscription(tenant, name="customer prod")
    state.grant_role(admin.object_id, "Owner", f"/subscriptions/{sub}")
    customer = AzureClients(
        emulator_credentials(
            emulator,
            tenant_id=tenant,
            client_id=admin.client_id,
            client_secret=admin.secret,
            subscription_id=sub,
        )
    )
    customer.resources().resource_groups.create_or_update("rg-keys", {"location": "westeurope"})
    params = vault_parameters(emulator, object_id=admin.object_id)
    params.properties.tenant_id = params.properties.access_policies[0].tenant_id = tenant
    management = customer.keyvault_management()
    vault = management.vaults.begin_create_or_update("rg-keys", "kv-customer", params).result()
    key = customer.keys(str(vault.properties.vault_uri)).create_rsa_key("cmk", size=2048)
    uai = azure.msi().user_assigned_identities.create_or_update(
        "rg", "des-id", {"location": "westeurope"}
    )
    app = graph(
        emulator,
        azure,
        "POST",
        "/applications",
        {"displayName": "isv-cmk", "signInAudience": "AzureADMultipleOrgs"},
    ).json()
    fic = {
        "name": "des-id",
        "issuer": f"https://login.microsoftonline.com/{emulator.identity.tenant_id}/v2.0",
        "subject": uai.principal_id,
        "audiences": ["api://AzureADTokenExchange"],
    }
    graph(emulator, azure, "POST", f"/applications/{app['id']}/federatedIdentityCredentials", fic)
    installed = graph(emulator, customer, "POST", "/servicePrincipals", {"appId": app["appId"]})
    entry = AccessPolicyEntry(
        tenant_id=tenant,
        object_id=installed.json()["id"],
        permissions=Permissions(keys_property=["get", "wrapKey", "unwrapKey"]),
    )
    management.vaults.update_access_policy(
        "rg-keys",
        "kv-customer",
        AccessPolicyUpdateKind.ADD,
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[entry])
        ),
    )
    azure.compute().disk_encryption_sets.begin_create_or_update(
        "rg",
        "des-x",
        {
            "location": "westeurope",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai.id: {}}},
            "properties": {"activeKey": {"keyUrl": key.id}, "federatedClientId": app["appId"]},
        },
    ).result()
    return app["appId"], tenant


def confidential_fleet(azure: AzureClients, emulator: Emulator) -> None:
    """A confidential VM set on an exportable RSA-HSM key, and VMs cvm1 (running) and cvm2
    (deallocated) on it."""
    azure.resources().resource_groups.create_or_update(GROUP, {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.properties.sku = Sku(family="A", name="premium")
    management = azure.keyvault_management()
    vault = management.vaults.begin_create_or_update(GROUP, "kv-cvm", params).result()
    key = azure.keys(str(vault.properties.vault_uri)).create_rsa_key(
        "cvm-key", size=2048, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    sets = azure.compute().disk_encryption_sets
    des = sets.begin_create_or_update(
        GROUP,
        "des-cvm",
        {
            "location": "westeurope",
            "identity": {"type": "SystemAssigned"},
            "properties": {"activeKey": {"keyUrl": key.id}, "encryptionType": CVM},
        },
    ).result()
    grant_policy(azure, emulator, des.identity.principal_id, ["get", "wrapKey", "unwrapKey"])
    token = azure.credential.get_token("https://graph.microsoft.com/.default").token
    orchestrator = requests.post(
        f"{emulator.base_url}/v1.0/servicePrincipals",
        json={"appId": ORCHESTRATOR},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    ).json()
    grant_policy(azure, emulator, orchestrator["id"], ["get", "release"])
    compute = azure.compute()
    source = managed_image(azure, "westeurope", group=GROUP, luns=())
    gallery_image(azure, GROUP)
    definition = compute.gallery_images.get(GROUP, "g1", "img")
    definition.features = [GalleryImageFeature(name="SecurityType", value="ConfidentialVM")]
    compute.gallery_images.begin_create_or_update(GROUP, "g1", "img", definition).result()
    version = compute.gallery_image_versions.begin_create_or_update(
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
    ).result()
    for name in ("cvm1", "cvm2"):
        confidential_vm(azure, name, des.id, version.id).result()
    compute.virtual_machines.begin_deallocate(GROUP, "cvm2").result()


def test_hsm_cross_tenant_and_confidential_sets_in_the_inventory(
    azure_block: str,
    azure: AzureClients,
    emulator: Emulator,
    flow_principal: Principal,
    tmp_path: Path,
) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    hsm_id = hsm_set(azure, emulator, flow_principal.object_id)
    app_id, customer_tenant = cross_tenant_set(azure, emulator)
    confidential_fleet(azure, emulator)
    emulator.requests.clear()
    inventory_customer_managed_keys(
        InventoryRequest(azure_credentials_block=azure_block, report_dir=str(tmp_path))
    )
    rows = json.loads((tmp_path / "inventory.json").read_text())
    found = {(r["resource_id"].rsplit("/", 1)[-1], r["part"], r["control"]): r for r in rows}

    hsm = found[("des-hsm", "", "key-age")]
    assert (hsm["verdict"], hsm["key_store_kind"], hsm["key_store"]) == (
        "compliant",
        "managed-hsm",
        hsm_id,
    )
    assert hsm["key_tenant"] == emulator.identity.tenant_id
    assert "managed HSM" in found[("des-hsm", "", "vault-recoverable")]["rule"]

    cross = found[("des-x", "", "key-age")]
    assert (cross["verdict"], cross["federated_client_id"]) == ("no-access", app_id)
    assert cross["key_tenant"] == customer_tenant and customer_tenant in cross["rule"]

    cvm_set = found[("des-cvm", "", "key-age")]
    assert cvm_set["encryption_type"] == CVM and cvm_set["key_store_kind"] == "key-vault"
    assert cvm_set["blocks_rotation"].rsplit("/", 1)[-1] == "cvm1"  # cvm2 is deallocated
    host = found[("cvm1", "host", "encryption-at-host")]
    assert (host["security_type"], host["verdict"]) == ("ConfidentialVM", "non-compliant")
    disk = found[("cvm1", "os-disk", "customer-key")]
    assert (disk["verdict"], disk["security_type"]) == ("compliant", "DiskWithVMGuestState")
    # The power states come with Resource Graph's rows: no instance view read per VM.
    assert emulator.requests.find("GET", r"virtualMachines/cvm[12]$") == []
