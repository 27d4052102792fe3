"""AKS rules of the emulator, through the real ContainerServiceClient."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.helpers import des_in_region


def cluster(
    des_id: str | None,
    version: str = "1.33",
    pool_type: str = "VirtualMachineScaleSets",
    location: str = "westeurope",
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "kubernetesVersion": version,
        "dnsPrefix": "aks",
        "agentPoolProfiles": [
            {
                "name": "system",
                "mode": "System",
                "count": 1,
                "vmSize": "Standard_DS2_v2",
                "type": pool_type,
            }
        ],
    }
    if des_id:
        props["diskEncryptionSetID"] = des_id
    return {"location": location, "identity": {"type": "SystemAssigned"}, "properties": props}


def create(azure: AzureClients, body: dict[str, Any], name: str = "aks") -> Any:
    return (
        azure.container_service()
        .managed_clusters.begin_create_or_update("rg-img", name, body)
        .result()
    )


@pytest.fixture
def des_id(azure: AzureClients, emulator: Emulator) -> str:
    return des_in_region(azure, emulator, "westeurope", "des-aks")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"version": "1.16"}, "1.17 or newer"),
        ({"pool_type": "AvailabilitySet"}, "VirtualMachineScaleSets"),
        ({"location": "eastus"}, "must be in the cluster's region"),
    ],
)
def test_cluster_rules(
    azure: AzureClients, des_id: str, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(HttpResponseError, match=message):
        create(azure, cluster(des_id, **overrides))
    assert not list(azure.container_service().managed_clusters.list_by_resource_group("rg-img"))


def test_set_cannot_be_added_to_an_existing_cluster(azure: AzureClients, des_id: str) -> None:
    create(azure, cluster(None))
    with pytest.raises(HttpResponseError, match="only be set when the cluster is created"):
        create(azure, cluster(des_id))


def test_set_without_key_access_is_forbidden(
    azure: AzureClients, emulator: Emulator, des_id: str
) -> None:
    vault = next(
        r
        for r in emulator.arm.resources.values()
        if r["type"] == "Microsoft.KeyVault/vaults" and r["name"] == "kv-des-aks"
    )
    des = emulator.arm.get(des_id)
    assert des is not None
    vault["properties"]["accessPolicies"] = [
        p
        for p in vault["properties"]["accessPolicies"]
        if p["objectId"] != des["identity"]["principalId"]
    ]
    with pytest.raises(HttpResponseError, match="KeyVaultAccessForbidden"):
        create(azure, cluster(des_id))


def test_node_pool_rules(azure: AzureClients, emulator: Emulator, des_id: str) -> None:
    create(azure, cluster(des_id))
    pools = azure.container_service().agent_pools
    with pytest.raises(HttpResponseError, match="VirtualMachineScaleSets"):
        pools.begin_create_or_update(
            "rg-img", "aks", "p1", {"properties": {"count": 1, "type": "AvailabilitySet"}}
        ).result()
    pool = pools.begin_create_or_update(
        "rg-img", "aks", "p2", {"properties": {"count": 1, "vmSize": "Standard_DS2_v2"}}
    ).result()
    stored = emulator.arm.get(str(pool.id))
    assert stored is not None and stored["properties"]["type"] == "VirtualMachineScaleSets"


def test_empty_versions_and_sizes_get_the_service_defaults(
    azure: AzureClients, emulator: Emulator
) -> None:
    azure.resources().resource_groups.create_or_update("rg-img", {"location": "westeurope"})
    body = cluster(None, version="")  # `az aks create` sends "" for what it leaves to AKS
    body["properties"]["agentPoolProfiles"][0].update(vmSize="", orchestratorVersion="")
    made = create(azure, body)
    assert made.kubernetes_version == made.current_kubernetes_version == "1.33.2"
    (system,) = made.agent_pool_profiles
    assert (system.orchestrator_version, system.vm_size) == ("1.33.2", "Standard_DS2_v2")
    pool = (
        azure.container_service()
        .agent_pools.begin_create_or_update(
            "rg-img",
            "aks",
            "user1",
            {"properties": {"count": 1, "vmSize": "", "orchestratorVersion": ""}},
        )
        .result()
    )
    assert (pool.orchestrator_version, pool.vm_size, pool.mode) == (
        "1.33.2",
        "Standard_DS2_v2",
        "User",
    )
