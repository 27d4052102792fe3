"""Cross-tenant customer-managed keys for disk encryption sets, through the real SDKs and
Graph: the service provider's multi-tenant app federated with its user-assigned identity,
the app installed in the customer's tenant and granted the key, `federatedClientId` on the
set; each missing piece refused, naming the side."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    EncryptionSetIdentity,
    KeyForDiskEncryptionSet,
    UserAssignedIdentitiesValue,
)
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    AccessPolicyUpdateKind,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)
from azure.mgmt.msi.models import FederatedIdentityCredential

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.conftest import emulator_credentials
from tests.helpers import vault_parameters

GRAPH = "https://graph.microsoft.com/.default"


def graph(emulator: Emulator, clients: AzureClients, method: str, path: str, body: Any = None):
    """A Graph call with the clients' token; the answer's JSON (or None)."""
    token = clients.credential.get_token(GRAPH).token
    answer = requests.request(
        method,
        f"{emulator.base_url}/v1.0{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
    return answer


@pytest.fixture
def customer(emulator: Emulator) -> tuple[AzureClients, str]:
    """The customer's tenant: its administrator's clients and its tenant id."""
    state = emulator.state
    tenant = state.add_tenant(name="customer")
    sub = state.add_subscription(tenant, name="customer prod")
    admin = state.add_service_principal(tenant, "customer-admin")
    credentials = emulator_credentials(
        emulator,
        tenant_id=tenant,
        client_id=admin.client_id,
        client_secret=admin.secret,
        subscription_id=sub,
    )
    return AzureClients(credentials), tenant


def test_a_cross_tenant_set_needs_every_piece_of_the_federation(
    azure: AzureClients, emulator: Emulator, customer: tuple[AzureClients, str]
) -> None:
    clients, tenant = customer
    admin = emulator.state.entra.by_client_id(clients.block.client_id, tenant)
    clients.resources().resource_groups.create_or_update("rg-keys", {"location": "westeurope"})
    params = vault_parameters(emulator, object_id=admin.object_id)
    params.properties.tenant_id = tenant
    params.properties.access_policies[0].tenant_id = tenant
    vault = (
        clients.keyvault_management()
        .vaults.begin_create_or_update("rg-keys", "kv-customer", params)
        .result()
    )
    key = clients.keys(vault.properties.vault_uri).create_rsa_key("cmk", size=2048)

    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    uai = azure.msi().user_assigned_identities.create_or_update(
        "rg", "des-id", {"location": "westeurope"}
    )
    app = graph(
        emulator, azure, "POST", "/applications", {"displayName": "isv-cmk"}
    ).json()  # single-tenant by default
    provider = emulator.identity.tenant_id

    def create() -> str:
        body = DiskEncryptionSet(
            location="westeurope",
            identity=EncryptionSetIdentity(
                type="UserAssigned",
                user_assigned_identities={uai.id: UserAssignedIdentitiesValue()},
            ),
            properties={
                "activeKey": KeyForDiskEncryptionSet(key_url=key.id),
                "federatedClientId": app["appId"],
            },
        )
        sets = azure.compute().disk_encryption_sets
        try:
            return str(
                sets.begin_create_or_update("rg", "des-x", body).result().federated_client_id
            )
        except HttpResponseError as exc:
            assert exc.error.code == "KeyVaultAccessForbidden"
            return exc.message

    assert "AADSTS70021" in create() and f"service provider tenant '{provider}'" in create()
    fic = {
        "name": "des-id",
        "issuer": f"https://login.microsoftonline.com/{provider}/v2.0",
        "subject": uai.principal_id,
        "audiences": ["api://AzureADTokenExchange"],
    }
    added = graph(
        emulator, azure, "POST", f"/applications/{app['id']}/federatedIdentityCredentials", fic
    )
    assert added.status_code == 201
    assert "single-tenant" in create()
    install = graph(emulator, clients, "POST", "/servicePrincipals", {"appId": app["appId"]})
    assert install.status_code == 400  # a single-tenant app stays home

    patched = graph(
        emulator,
        azure,
        "PATCH",
        f"/applications/{app['id']}",
        {"signInAudience": "AzureADMultipleOrgs"},
    )
    assert patched.status_code == 204
    refused = create()
    assert f"customer tenant '{tenant}'" in refused and "AADSTS700016" in refused
    installed = graph(emulator, clients, "POST", "/servicePrincipals", {"appId": app["appId"]})
    assert installed.status_code == 201 and installed.json()["appId"] == app["appId"]
    refused = create()
    assert "lacks key permissions get, unwrapkey, wrapkey" in refused
    assert installed.json()["id"] in refused

    clients.keyvault_management().vaults.update_access_policy(
        "rg-keys",
        "kv-customer",
        AccessPolicyUpdateKind.ADD,
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(
                access_policies=[
                    AccessPolicyEntry(
                        tenant_id=tenant,
                        object_id=installed.json()["id"],
                        permissions=Permissions(keys_property=["get", "wrapKey", "unwrapKey"]),
                    )
                ]
            )
        ),
    )
    assert create() == app["appId"]
    stored = azure.compute().disk_encryption_sets.get("rg", "des-x")
    assert stored.properties.active_key.source_vault.id == vault.id


def test_identity_federated_credentials_have_one_audience_and_unique_subjects(
    azure: AzureClients,
) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    msi = azure.msi()
    msi.user_assigned_identities.create_or_update("rg", "wl-id", {"location": "westeurope"})
    issuer = "https://oidc.example.test/tenant/issuer/"

    def add(name: str, subject: str, audiences: list[str] | None = None):
        return msi.federated_identity_credentials.create_or_update(
            "rg",
            "wl-id",
            name,
            FederatedIdentityCredential(
                issuer=issuer,
                subject=subject,
                audiences=audiences or ["api://AzureADTokenExchange"],
            ),
        )

    created = add("kms", "system:serviceaccount:kube-system:kms")
    assert created.issuer == issuer and created.audiences == ["api://AzureADTokenExchange"]
    with pytest.raises(HttpResponseError, match="exactly one audience"):
        add("two", "system:serviceaccount:a:b", ["api://AzureADTokenExchange", "other"])
    with pytest.raises(HttpResponseError, match="already has issuer"):
        add("again", "system:serviceaccount:kube-system:kms")
    for i in range(19):
        add(f"sa{i}", f"system:serviceaccount:ns:sa{i}")
    with pytest.raises(HttpResponseError, match="at most 20"):
        add("sa-extra", "system:serviceaccount:ns:extra")
    listed = list(msi.federated_identity_credentials.list("rg", "wl-id"))
    assert len(listed) == 20 and {f.name for f in listed} >= {"kms", "sa18"}
