"""Resource Graph through the real SDK: queries parsed (not matched as strings), subscriptions
kept apart, pages, the per-user quota and refusals of what the parser does not know."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.encrypted_vm import encrypted_vm

DISKS = "Microsoft.Compute/disks"


@pytest.fixture
def graph(azure: AzureClients, emulator: Emulator) -> ResourceGraphClient:
    return ResourceGraphClient(
        azure.credential,
        base_url=emulator.base_url + "/",
        credential_scopes=[azure.endpoints.arm_scope],
        connection_verify=str(emulator.ca_path),
        retry_total=0,
    )


def make_groups(azure: AzureClients, sub_clients: list[AzureClients]) -> None:
    for clients in [azure, *sub_clients]:
        clients.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})


def identities(azure: AzureClients, names: list[str]) -> None:
    for name in names:
        azure.msi().user_assigned_identities.create_or_update(
            "rg", name, {"location": "westeurope", "tags": {"team": name[:1]}}
        )


def run(graph: ResourceGraphClient, query: str, **options: object) -> dict:
    response = graph.resources(
        QueryRequest(query=query, options=QueryRequestOptions(**options) if options else None)
    )
    return {"rows": response.data, "total": response.total_records, "token": response.skip_token}


def test_where_project_order_over_arm_resources(
    graph: ResourceGraphClient, azure: AzureClients
) -> None:
    make_groups(azure, [])
    identities(azure, ["alpha", "beta", "gamma"])
    found = run(
        graph,
        "Resources | where type =~ 'Microsoft.ManagedIdentity/userAssignedIdentities' "
        "and (tags.team == 'a' or name in~ ('GAMMA')) "
        "| project name, team = tags.team, properties.principalId | order by name asc",
    )
    assert [r["name"] for r in found["rows"]] == ["alpha", "gamma"]
    assert found["rows"][0]["team"] == "a"
    assert found["rows"][0]["properties_principalId"]
    everything = run(
        graph, "Resources | where type == 'microsoft.managedidentity/userassignedidentities'"
    )
    assert everything["total"] == 3  # Resource Graph lower-cases `type`
    assert everything["rows"][0]["resourceGroup"] == "rg"


def test_pages_continue_with_the_skip_token(
    graph: ResourceGraphClient, azure: AzureClients
) -> None:
    make_groups(azure, [])
    identities(azure, [f"id{i}" for i in range(5)])
    first = run(graph, "Resources | order by name asc", top=2)
    assert (len(first["rows"]), first["total"]) == (2, 5) and first["token"]
    names = [r["name"] for r in first["rows"]]
    token = first["token"]
    while token:
        page = run(graph, "Resources | order by name asc", top=2, skip_token=token)
        names += [r["name"] for r in page["rows"]]
        token = page["token"]
    assert names == [f"id{i}" for i in range(5)]


def test_subscriptions_are_kept_apart(
    graph: ResourceGraphClient, azure: AzureClients, emulator: Emulator
) -> None:
    other = emulator.state.add_subscription(name="second")
    second = AzureClients(azure.block, other)
    make_groups(azure, [second])
    identities(azure, ["home"])
    identities(second, ["away"])
    both = run(graph, "Resources | project name, subscriptionId | order by name asc")
    assert [(r["name"], r["subscriptionId"]) for r in both["rows"]] == [
        ("away", other),
        ("home", azure.subscription_id),
    ]
    only = graph.resources(QueryRequest(subscriptions=[other], query="Resources"))
    assert [r["name"] for r in only.data] == ["away"]


@pytest.mark.parametrize(
    "query",
    [
        "Resources | summarize count() by type",
        "Resources | where type ~= 'x'",
        "ResourceContainers",
        "Resources | where name == ",
    ],
)
def test_what_the_parser_does_not_know_is_refused(graph: ResourceGraphClient, query: str) -> None:
    with pytest.raises(HttpResponseError) as info:
        graph.resources(QueryRequest(query=query))
    assert info.value.status_code == 400
    assert "Query is invalid" in str(info.value)


def test_quota_of_queries_per_window(graph: ResourceGraphClient, emulator: Emulator) -> None:
    emulator.state.resource_graph.quota = 3
    seen = []
    for _ in range(3):
        response = graph.resources(
            QueryRequest(query="Resources | limit 1"),
            cls=lambda pipeline, result, headers: pipeline.http_response.headers,
        )
        seen.append(int(response["x-ms-user-quota-remaining"]))
    assert seen == [2, 1, 0]
    with pytest.raises(HttpResponseError) as info:
        graph.resources(QueryRequest(query="Resources"))
    assert info.value.status_code == 429
    assert int(info.value.response.headers["Retry-After"]) >= 1


def test_virtual_machine_rows_carry_their_power_state(
    graph: ResourceGraphClient, azure: AzureClients, emulator: Emulator
) -> None:
    vm_id, _ = encrypted_vm(azure, emulator)
    query = (
        "Resources | where type =~ 'Microsoft.Compute/virtualMachines' "
        "| project id, properties.extended.instanceView.powerState.code"
    )
    column = "properties_extended_instanceView_powerState_code"
    assert [r[column] for r in run(graph, query)["rows"]] == ["PowerState/running"]
    azure.compute().virtual_machines.begin_deallocate("rg-img", vm_id.rsplit("/", 1)[-1]).result()
    assert [r[column] for r in run(graph, query)["rows"]] == ["PowerState/deallocated"]
