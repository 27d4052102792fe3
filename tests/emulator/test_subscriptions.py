"""Tenants and subscriptions: state keyed by subscription, tokens per tenant, what ARM
answers for unknown subscriptions and locations, through the real SDK clients."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.conftest import emulator_credentials

UNKNOWN = "00000000-1111-4222-8333-444444444444"


@pytest.fixture
def other_tenant(emulator: Emulator) -> tuple[AzureClients, str]:
    """Clients of a service principal of a second tenant, on that tenant's subscription."""
    state = emulator.state
    tenant = state.add_tenant(name="contoso")
    sub = state.add_subscription(tenant, name="contoso prod")
    sp = state.add_service_principal(tenant, "contoso-deployer")
    credentials = emulator_credentials(
        emulator,
        tenant_id=tenant,
        client_id=sp.client_id,
        client_secret=sp.secret,
        subscription_id=sub,
    )
    return AzureClients(credentials), sub


def test_resources_of_one_subscription_are_invisible_from_another(
    azure: AzureClients, emulator: Emulator
) -> None:
    second = emulator.state.add_subscription(name="second")
    other = AzureClients(azure.block, second)
    other.resources().resource_groups.create_or_update("rg-b", {"location": "westeurope"})
    other.msi().user_assigned_identities.create_or_update("rg-b", "id-b", {"location": "eastus"})
    azure.resources().resource_groups.create_or_update("rg-a", {"location": "westeurope"})

    assert [g.name for g in azure.resources().resource_groups.list()] == ["rg-a"]
    assert [g.name for g in other.resources().resource_groups.list()] == ["rg-b"]
    assert not azure.resources().resource_groups.check_existence("rg-b")
    assert [r.name for r in other.resources().resources.list()] == ["id-b"]
    assert list(azure.resources().resources.list()) == []
    names = {s.subscription_id for s in azure.subscriptions().subscriptions.list()}
    assert names == {emulator.identity.subscription_id, second}


def test_a_tenant_sees_only_its_subscriptions(
    azure: AzureClients, emulator: Emulator, other_tenant: tuple[AzureClients, str]
) -> None:
    clients, sub = other_tenant
    clients.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    identity = clients.msi().user_assigned_identities.create_or_update(
        "rg", "id1", {"location": "westeurope"}
    )
    assert identity.tenant_id == clients.block.tenant_id
    assert emulator.state.entra.principals[identity.principal_id].tenant_id == identity.tenant_id

    listed = list(clients.subscriptions().subscriptions.list())
    assert [(s.subscription_id, s.display_name) for s in listed] == [(sub, "contoso prod")]
    assert listed[0].tenant_id == clients.block.tenant_id
    tenants = [t.tenant_id for t in clients.subscriptions().tenants.list()]
    assert tenants == [clients.block.tenant_id]
    home = {s.subscription_id for s in azure.subscriptions().subscriptions.list()}
    assert home == {emulator.identity.subscription_id}


def test_a_token_of_another_tenant_is_refused(
    azure: AzureClients, other_tenant: tuple[AzureClients, str]
) -> None:
    _, sub = other_tenant
    with pytest.raises(ClientAuthenticationError) as info:
        AzureClients(azure.block, sub).resources().resource_groups.create_or_update(
            "rg", {"location": "westeurope"}
        )
    assert info.value.status_code == 401
    assert info.value.error.code == "InvalidAuthenticationTokenTenant"
    assert sub not in info.value.error.message  # the message names tenants, not the id
    assert "It must match the tenant" in info.value.error.message


def test_a_principal_is_only_found_in_its_own_tenant(
    azure: AzureClients, emulator: Emulator
) -> None:
    tenant = emulator.state.add_tenant()
    stranger = emulator.state.add_service_principal(tenant, "stranger")
    colleague = emulator.state.add_service_principal(name="colleague")
    scope = f"/subscriptions/{emulator.identity.subscription_id}"
    reader = f"{scope}/providers/Microsoft.Authorization/roleDefinitions/" + (
        "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    )
    assignments = azure.authorization().role_assignments
    made = assignments.create(
        scope,
        "5b0b1e0c-0000-4000-8000-000000000001",
        {"role_definition_id": reader, "principal_id": colleague.object_id},
    )
    assert made.principal_id == colleague.object_id
    with pytest.raises(HttpResponseError) as info:
        assignments.create(
            scope,
            "5b0b1e0c-0000-4000-8000-000000000002",
            {"role_definition_id": reader, "principal_id": stranger.object_id},
        )
    assert info.value.error.code == "PrincipalNotFound"
    assert emulator.identity.tenant_id in info.value.error.message


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("GET", "/resourcegroups"),
        ("PUT", "/resourcegroups/rg"),
        ("GET", "/resources"),
        ("GET", "/locations"),
        ("GET", "/providers/Microsoft.Compute"),
        ("PUT", "/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"),
        ("GET", "/providers/Microsoft.KeyVault/deletedVaults"),
    ],
)
def test_an_unknown_subscription_is_404_on_every_route(
    azure: AzureClients, emulator: Emulator, method: str, path: str
) -> None:
    token = azure.credential.get_token(azure.endpoints.arm_scope).token
    response = requests.request(
        method,
        f"{emulator.base_url}/subscriptions/{UNKNOWN}{path}?api-version=2024-11-01",
        json={"location": "westeurope"},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"] == {
        "code": "SubscriptionNotFound",
        "message": f"The subscription '{UNKNOWN}' could not be found.",
    }


def test_locations_as_the_sdk_reads_them(azure: AzureClients, emulator: Emulator) -> None:
    sub = emulator.identity.subscription_id
    found = {loc.name: loc for loc in azure.subscriptions().subscriptions.list_locations(sub)}
    assert len(found) >= 40 and {"westeurope", "eastus", "swedencentral"} <= set(found)
    we = found["westeurope"]
    assert (we.display_name, we.regional_display_name) == ("West Europe", "(Europe) West Europe")
    assert we.id == f"/subscriptions/{sub}/locations/westeurope"
    assert we.metadata.physical_location == "Netherlands"
    assert [p.name for p in we.metadata.paired_region] == ["northeurope"]
    assert all(loc.metadata.region_type == "Physical" for loc in found.values())


@pytest.mark.parametrize(
    ("create", "code", "what"),
    [
        (
            lambda a: a.resources().resource_groups.create_or_update(
                "rg-mars", {"location": "mars-north"}
            ),
            "LocationNotAvailableForResourceGroup",
            "resource group",
        ),
        (
            lambda a: a.msi().user_assigned_identities.create_or_update(
                "rg", "id1", {"location": "mars-north"}
            ),
            "LocationNotAvailableForResourceType",
            "resource type 'Microsoft.ManagedIdentity/userAssignedIdentities'",
        ),
    ],
)
def test_a_location_outside_the_list_is_refused(
    azure: AzureClients, create: Any, code: str, what: str
) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "West Europe"})
    with pytest.raises(HttpResponseError) as info:
        create(azure)
    assert info.value.status_code == 400
    assert info.value.error.code == code
    assert info.value.error.message.startswith(
        f"The provided location 'mars-north' is not available for {what}."
    )
    assert "westeurope" in info.value.error.message
    assert azure.resources().resource_groups.get("rg").location == "westeurope"
    assert not azure.resources().resource_groups.check_existence("rg-mars")


def test_a_vault_challenges_for_its_own_tenant(
    azure: AzureClients, emulator: Emulator, other_tenant: tuple[AzureClients, str]
) -> None:
    from azure.mgmt.keyvault.models import Sku, VaultCreateOrUpdateParameters, VaultProperties

    clients, _ = other_tenant
    tenant = clients.block.tenant_id
    clients.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    vault = (
        clients.keyvault_management()
        .vaults.begin_create_or_update(
            "rg",
            "kv-contoso",
            VaultCreateOrUpdateParameters(
                location="westeurope",
                properties=VaultProperties(
                    tenant_id=tenant,
                    sku=Sku(family="A", name="standard"),
                    enable_rbac_authorization=False,
                    access_policies=[],
                ),
            ),
        )
        .result()
    )
    uri = str(vault.properties.vault_uri)
    token = azure.credential.get_token("https://vault.azure.net/.default").token  # home tenant
    answer = requests.get(
        f"{uri}keys?api-version=7.5",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["message"].startswith("AKV10032: Invalid issuer.")
    assert f'authorization="{emulator.base_url}/{tenant}"' in answer.headers["WWW-Authenticate"]
    with pytest.raises(HttpResponseError) as info:  # its own tenant's token gets further
        clients.keys(uri).create_rsa_key("k")
    assert info.value.status_code == 403  # no access policy for the caller
