"""AKS flows end to end: a cluster and a node pool on a disk encryption set, and the data
disk StorageClass applied through the real kubernetes client with the cluster's user
credentials."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiException

from byok.aks_models import cluster_body, cluster_id
from byok.errors import ConcurrentRun
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from clients.kubernetes import storage_api
from emulator.faults import Fault
from emulator.server import Emulator
from flows.aks import (
    AksClusterRequest,
    DataDiskEncryptionRequest,
    NodePoolRequest,
    add_encrypted_node_pool,
    create_encrypted_aks_cluster,
    encrypt_aks_data_disks,
)
from flows.disk_encryption_set import DiskEncryptionSetRequest, prepare_disk_encryption_set
from tasks.run_lock import resource_lock
from tests.flows.refusals import refused, writes


@pytest.fixture
def des_id(azure_block: str, emulator: Emulator) -> str:
    result = prepare_disk_encryption_set(
        DiskEncryptionSetRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-aks",
            location="westeurope",
            vault_name="kv-aks",
            key_name="aks-key",
            des_name="des-aks",
            propagation_timeout_minutes=0.5,
        )
    )
    return result.disk_encryption_set.id


def cluster_request(block: str, des_id: str, **overrides: object) -> AksClusterRequest:
    values: dict[str, object] = {
        "azure_credentials_block": block,
        "resource_group": "rg-aks",
        "location": "westeurope",
        "cluster_name": "aks1",
        "disk_encryption_set_id": des_id,
        "propagation_timeout_minutes": 0.5,
    }
    values.update(overrides)
    return AksClusterRequest(**values)  # type: ignore[arg-type]


def cluster_writes(emulator: Emulator) -> list[str]:
    return [r.path for r in emulator.requests.find("PUT", "managedClusters")]


def test_cluster_node_pool_and_data_disks(
    azure_block: str, emulator: Emulator, des_id: str, azure: AzureClients
) -> None:
    cluster = create_encrypted_aks_cluster(cluster_request(azure_block, des_id))
    assert cluster.disk_encryption_set_id == des_id
    stored = emulator.arm.get(cluster.id)
    assert stored is not None and stored["properties"]["diskEncryptionSetID"] == des_id

    with_pool = add_encrypted_node_pool(
        NodePoolRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-aks",
            cluster_name="aks1",
            pool_name="userpool",
            disk_encryption_set_id=des_id,
        )
    )
    assert with_pool.node_pools == ["system", "userpool"]
    assert emulator.arm.get(f"{cluster.id}/agentPools/userpool") is not None

    request = DataDiskEncryptionRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-aks",
        cluster_name="aks1",
        disk_encryption_set_id=des_id,
    )
    assert encrypt_aks_data_disks(request) == "created"
    assert encrypt_aks_data_disks(request) == "unchanged"
    kubeconfig = (
        azure.container_service()
        .managed_clusters.list_cluster_user_credentials("rg-aks", "aks1")
        .kubeconfigs[0]
        .value
    )
    sc = storage_api(kubeconfig).read_storage_class("byok-azure-disk")
    assert sc.provisioner == "disk.csi.azure.com"
    assert sc.parameters == {
        "skuname": "Standard_LRS",
        "kind": "managed",
        "diskEncryptionSetID": des_id,
    }
    legacy = request.model_copy(update={"provisioner": "kubernetes.io/azure-disk"})
    assert encrypt_aks_data_disks(legacy) == "recreated"
    assert storage_api(kubeconfig).read_storage_class("byok-azure-disk").provisioner == (
        "kubernetes.io/azure-disk"
    )


def test_rerun_creates_no_second_cluster(azure_block: str, emulator: Emulator, des_id: str) -> None:
    first = create_encrypted_aks_cluster(cluster_request(azure_block, des_id))
    emulator.requests.clear()
    assert create_encrypted_aks_cluster(cluster_request(azure_block, des_id)) == first
    assert cluster_writes(emulator) == []


def test_old_kubernetes_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, des_id: str
) -> None:
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match=r"kubernetes_version = '1.16': .*1.17 or newer"):
        create_encrypted_aks_cluster(
            cluster_request(azure_block, des_id, kubernetes_version="1.16")
        )
    assert cluster_writes(emulator) == []


def test_set_in_another_region_is_refused(
    azure_block: str, emulator: Emulator, des_id: str
) -> None:
    with pytest.raises(InvalidRequest, match="same region as disk encryption set"):
        create_encrypted_aks_cluster(cluster_request(azure_block, des_id, location="eastus"))
    assert cluster_writes(emulator) == []


def test_existing_cluster_without_the_set_is_refused(
    azure_block: str, emulator: Emulator, des_id: str, azure: AzureClients
) -> None:
    body = cluster_body(cluster_request(azure_block, des_id))
    body.properties.disk_encryption_set_id = None
    azure.container_service().managed_clusters.begin_create_or_update(
        "rg-aks", "aks1", body
    ).result()
    with pytest.raises(InvalidRequest, match="create a new cluster"):
        create_encrypted_aks_cluster(cluster_request(azure_block, des_id))
    with pytest.raises(InvalidRequest, match="create a new cluster"):
        add_encrypted_node_pool(
            NodePoolRequest(
                azure_credentials_block=azure_block,
                resource_group="rg-aks",
                cluster_name="aks1",
                pool_name="userpool",
                disk_encryption_set_id=des_id,
            )
        )


def test_failed_cluster_creation_is_applied_again(
    azure_block: str, emulator: Emulator, des_id: str
) -> None:
    emulator.faults.add(Fault("lro-failed", method="PUT", path="managedClusters/aks1$"))
    # the failed cluster stays (as in Azure) and its transient failure is retried: the
    # step applies it again
    cluster = create_encrypted_aks_cluster(cluster_request(azure_block, des_id))
    assert cluster.disk_encryption_set_id == des_id
    stored = emulator.arm.get(cluster.id)
    assert stored is not None and stored["properties"]["provisioningState"] == "Succeeded"
    assert len(cluster_writes(emulator)) == 2


def test_storage_class_api_needs_the_cluster_token(
    azure_block: str, emulator: Emulator, des_id: str, azure: AzureClients
) -> None:
    import yaml

    create_encrypted_aks_cluster(cluster_request(azure_block, des_id))
    kubeconfig = yaml.safe_load(
        azure.container_service()
        .managed_clusters.list_cluster_user_credentials("rg-aks", "aks1")
        .kubeconfigs[0]
        .value
    )
    kubeconfig["users"][0]["user"]["token"] = "wrong"
    with pytest.raises(ApiException) as info:
        storage_api(yaml.safe_dump(kubeconfig).encode()).read_storage_class("x")
    assert info.value.status == 401


def test_storage_class_with_unknown_set_is_invalid(
    azure_block: str, emulator: Emulator, des_id: str, azure: AzureClients
) -> None:
    from byok.storage_class import storage_class

    create_encrypted_aks_cluster(cluster_request(azure_block, des_id))
    api = storage_api(
        azure.container_service()
        .managed_clusters.list_cluster_user_credentials("rg-aks", "aks1")
        .kubeconfigs[0]
        .value
    )
    with pytest.raises(ApiException) as info:
        api.create_storage_class(storage_class("bad", des_id.replace("des-aks", "nope")))
    assert info.value.status == 422


def test_bad_requests_are_refused_before_any_write_without_traceback(
    azure_block: str, emulator: Emulator, des_id: str
) -> None:
    before = writes(emulator)
    good = cluster_request(azure_block, des_id).model_dump(mode="json")
    assert refused(create_encrypted_aks_cluster, good | {"node_count": 0}) == (
        "request.node_count = 0: Input should be greater than or equal to 1"
    )
    assert refused(create_encrypted_aks_cluster, good | {"location": "mars-north"}).startswith(
        "location = 'mars-north': not a region of this subscription"
    )
    unknown = "00000000-0000-0000-0000-0000000000ff"
    assert refused(create_encrypted_aks_cluster, good | {"subscription_id": unknown}) == (
        f"subscription_id = '{unknown}': no such subscription, or these credentials cannot see it"
    )
    pool = {"azure_credentials_block": azure_block, "resource_group": "rg-aks"}
    assert refused(add_encrypted_node_pool, pool | {"cluster_name": "aks1"}) == (
        "request.pool_name = <missing>: Field required; "
        "request.disk_encryption_set_id = <missing>: Field required"
    )
    assert writes(emulator) == before


def test_a_run_on_a_busy_cluster_fails_fast_before_any_write(
    azure_block: str, emulator: Emulator, des_id: str
) -> None:
    request = cluster_request(azure_block, des_id)
    target = cluster_id(emulator.identity.subscription_id, "rg-aks", "aks1")
    before = writes(emulator)
    with (
        resource_lock(target, wait=False),
        pytest.raises(ConcurrentRun, match="aks1: another run is working on this resource"),
    ):
        create_encrypted_aks_cluster(request)
    assert writes(emulator) == before


def test_encryption_at_host_and_double_encryption(
    azure_block: str, emulator: Emulator, des_id: str
) -> None:
    double = prepare_disk_encryption_set(
        DiskEncryptionSetRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-aks",
            location="westeurope",
            vault_name="kv-aks",
            key_name="aks-key",
            des_name="des-double",
            encryption_type="EncryptionAtRestWithPlatformAndCustomerKeys",
            propagation_timeout_minutes=0.5,
        )
    ).disk_encryption_set.id
    with pytest.raises(InvalidRequest, match="double encryption needs a set of type"):
        create_encrypted_aks_cluster(cluster_request(azure_block, des_id, double_encryption=True))
    # the subscription does not offer the feature: refused before the cluster is written
    with pytest.raises(
        InvalidRequest, match=r"does not offer the Microsoft\.Compute/EncryptionAtHost"
    ):
        create_encrypted_aks_cluster(
            cluster_request(azure_block, double, enable_encryption_at_host=True)
        )
    assert cluster_writes(emulator) == []

    emulator.arm.configure_feature("Microsoft.Compute", "EncryptionAtHost", polls=1)
    request = cluster_request(
        azure_block, double, double_encryption=True, enable_encryption_at_host=True
    )
    cluster = create_encrypted_aks_cluster(request)
    assert cluster.host_encrypted_pools == ["system"]
    assert emulator.arm.feature("Microsoft.Compute", "EncryptionAtHost").state == "Registered"
    stored = emulator.arm.get(cluster.id)
    assert stored is not None
    assert stored["properties"]["agentPoolProfiles"][0]["enableEncryptionAtHost"] is True
    pool = add_encrypted_node_pool(
        NodePoolRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-aks",
            cluster_name="aks1",
            pool_name="hostpool",
            disk_encryption_set_id=double,
            enable_encryption_at_host=True,
        )
    )
    assert pool.host_encrypted_pools == ["system", "hostpool"]
