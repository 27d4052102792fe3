"""Procedure C, steps 5-7: an AKS cluster whose node OS disks are encrypted by a disk
encryption set, node pools on it, and data disks encrypted through a StorageClass."""

from __future__ import annotations

from typing import Any

from azure.mgmt.core.tools import resource_id
from prefect import flow, task
from pydantic import BaseModel, Field

from blocks.azure import AzureCredentials
from byok.parameters import parse_request
from byok.storage_class import Provisioner
from byok.validation import InvalidRequest, check_name, same_region
from clients.azure import AzureClients
from tasks.aks import (
    ClusterInfo,
    apply_storage_class,
    build_storage_class,
    check_cluster_des,
    check_kubernetes_version,
    ensure_cluster,
    ensure_node_pool,
    read_cluster,
    verify_cluster,
)
from tasks.disk_encryption_set import DiskEncryptionSetInfo, des_info, read_des
from tasks.events import emit_byok_event
from tasks.refusal import refuse_quietly
from tasks.registration import FEATURE_NOT_FOUND, register_feature, wait_for_feature
from tasks.resource_group import ensure_resource_group
from tasks.retry import STEP_RETRIES
from tasks.run_lock import resource_lock
from tasks.subscription import check_subscription_regions

ENCRYPTION_AT_HOST = ("Microsoft.Compute", "EncryptionAtHost")
DOUBLE_ENCRYPTION = "EncryptionAtRestWithPlatformAndCustomerKeys"

_DES_FIELD = Field(
    ...,
    description="Resource id of the disk encryption set (see the "
    "prepare-disk-encryption-set flow).",
)
_BLOCK_FIELD = Field(..., description="Name of the saved 'BYOK Azure Credentials' block.")
_HOST_FIELD = Field(
    False,
    description="Encryption at host: temp disks and caches encrypted too (registers the "
    "subscription's Microsoft.Compute/EncryptionAtHost feature).",
)
_WAIT_FIELD = Field(
    False,
    description="When another run is working on this cluster: wait for it (default: fail at once).",
)


def cluster_id(subscription: str, resource_group: str, name: str) -> str:
    """A managed cluster's resource id (what a run locks)."""
    return resource_id(
        subscription=subscription,
        resource_group=resource_group,
        namespace="Microsoft.ContainerService",
        type="managedClusters",
        name=name,
    )


class AksClusterRequest(BaseModel):
    """A new cluster whose node OS disks use a disk encryption set."""

    azure_credentials_block: str = _BLOCK_FIELD
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group (created if missing).")
    location: str = Field(..., description="Region of the cluster (the set's region).")
    cluster_name: str = Field(
        ..., pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$", description="AKS cluster name."
    )
    kubernetes_version: str = Field("1.33", description="1.17 or newer.")
    disk_encryption_set_id: str = _DES_FIELD
    node_count: int = Field(1, ge=1, le=1000, description="Nodes in the system pool.")
    node_vm_size: str = Field("Standard_DS2_v2", description="VM size of the nodes.")
    enable_encryption_at_host: bool = _HOST_FIELD
    double_encryption: bool = Field(
        False,
        description="Require a set of type EncryptionAtRestWithPlatformAndCustomerKeys (platform "
        "and customer keys: double encryption at rest).",
    )
    propagation_timeout_minutes: float = Field(
        15, gt=0, description="How long to wait for the set's key access to propagate."
    )
    wait_for_other_run: bool = _WAIT_FIELD


class NodePoolRequest(BaseModel):
    """A node pool added to a cluster that uses a disk encryption set."""

    azure_credentials_block: str = _BLOCK_FIELD
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the cluster.")
    cluster_name: str = Field(..., description="The cluster.")
    pool_name: str = Field(
        ...,
        pattern=r"^[a-z][a-z0-9]{0,11}$",
        description="Pool name: lower-case letters and digits, 1-12.",
    )
    disk_encryption_set_id: str = _DES_FIELD
    node_count: int = Field(1, ge=0, le=1000, description="Nodes in the pool.")
    node_vm_size: str = Field("Standard_DS2_v2", description="VM size of the nodes.")
    enable_encryption_at_host: bool = _HOST_FIELD
    wait_for_other_run: bool = _WAIT_FIELD


class DataDiskEncryptionRequest(BaseModel):
    """The StorageClass that encrypts new data disks of a cluster."""

    azure_credentials_block: str = _BLOCK_FIELD
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the cluster.")
    cluster_name: str = Field(..., description="The cluster.")
    disk_encryption_set_id: str = _DES_FIELD
    storage_class_name: str = Field(
        "byok-azure-disk",
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="StorageClass name.",
    )
    provisioner: Provisioner = Field(
        "disk.csi.azure.com", description="CSI driver, or the legacy in-tree one."
    )
    sku_name: str = Field("Standard_LRS", description="Disk SKU (skuname).")
    wait_for_other_run: bool = _WAIT_FIELD


def read_des_by_id(
    credentials: AzureCredentials, subscription_id: str | None, des_id: str
) -> DiskEncryptionSetInfo:
    """The set named by an id, or InvalidRequest naming the field."""
    parts = des_id.strip("/").split("/")
    if (
        len(parts) != 8
        or parts[5].lower() != "microsoft.compute"
        or parts[6].lower() != ("diskencryptionsets")
    ):
        raise InvalidRequest(
            "disk_encryption_set_id",
            des_id,
            "not a disk encryption set id "
            "(/subscriptions/…/resourceGroups/…/providers/Microsoft.Compute/"
            "diskEncryptionSets/…)",
        )
    clients = AzureClients.of(credentials, subscription_id or parts[1])
    des = read_des(clients, parts[3], parts[7])
    if des is None:
        raise InvalidRequest("disk_encryption_set_id", des_id, "no such disk encryption set")
    return des_info(des)


def ensure_encryption_at_host(credentials: AzureCredentials, sub: str) -> None:
    """The subscription's Microsoft.Compute/EncryptionAtHost feature, registered (Procedure A's
    feature steps)."""
    state = register_feature(credentials, sub, *ENCRYPTION_AT_HOST)
    if state == FEATURE_NOT_FOUND:
        raise InvalidRequest(
            "enable_encryption_at_host",
            True,
            "the subscription does not offer the Microsoft.Compute/EncryptionAtHost feature",
        )
    wait_for_feature(credentials, sub, *ENCRYPTION_AT_HOST, 15 * 60, 5)


@task(name="Validate cluster request", **STEP_RETRIES)
def validate_cluster_request(credentials: AzureCredentials, request: AksClusterRequest) -> None:
    """Version, the set's existence and region, an existing cluster's set: before any write."""
    check_name("resource_group", "resource_group", request.resource_group)
    check_kubernetes_version("kubernetes_version", request.kubernetes_version)
    des = read_des_by_id(credentials, request.subscription_id, request.disk_encryption_set_id)
    same_region("location", request.location, des.location, f"disk encryption set '{des.name}'")
    if request.double_encryption and des.encryption_type != DOUBLE_ENCRYPTION:
        raise InvalidRequest(
            "disk_encryption_set_id",
            request.disk_encryption_set_id,
            f"the set's encryption type is {des.encryption_type}; double encryption needs a set "
            f"of type {DOUBLE_ENCRYPTION} (a set's type is fixed when it is created)",
        )
    cluster = read_cluster(
        AzureClients.of(credentials, request.subscription_id),
        request.resource_group,
        request.cluster_name,
    )
    if cluster is not None:
        check_cluster_des(cluster, request.disk_encryption_set_id, "disk_encryption_set_id")


def cluster_body(request: AksClusterRequest) -> dict[str, Any]:
    """The managed cluster of `az aks create --node-osdisk-diskencryptionsetid`."""
    return {
        "location": request.location,
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "kubernetesVersion": request.kubernetes_version,
            "dnsPrefix": request.cluster_name,
            "diskEncryptionSetID": request.disk_encryption_set_id,
            "agentPoolProfiles": [
                {
                    "name": "system",
                    "mode": "System",
                    "count": request.node_count,
                    "vmSize": request.node_vm_size,
                    "type": "VirtualMachineScaleSets",
                    "osType": "Linux",
                    "osDiskType": "Managed",
                    "enableEncryptionAtHost": request.enable_encryption_at_host,
                }
            ],
        },
    }


@flow(name="create-encrypted-aks-cluster", persist_result=True, validate_parameters=False)
@refuse_quietly
def create_encrypted_aks_cluster(request: AksClusterRequest) -> ClusterInfo:
    """Check → one run per cluster → resource group → cluster with node OS disks encrypted by
    the set → verify."""
    request = parse_request(AksClusterRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    check_subscription_regions(credentials, sub, {"location": request.location})
    validate_cluster_request(credentials, request)
    with resource_lock(cluster_id(sub, rg, request.cluster_name), wait=request.wait_for_other_run):
        return _create_cluster(credentials, request, sub)


def _create_cluster(
    credentials: AzureCredentials, request: AksClusterRequest, sub: str
) -> ClusterInfo:
    """The writes of the cluster flow, once the request is valid and the cluster's lock held."""
    rg = request.resource_group
    if request.enable_encryption_at_host:
        ensure_encryption_at_host(credentials, sub)
    ensure_resource_group(credentials, sub, rg, request.location)
    ensure_cluster(
        credentials,
        sub,
        rg,
        request.cluster_name,
        cluster_body(request),
        request.propagation_timeout_minutes * 60,
    )
    cluster = verify_cluster(
        credentials,
        sub,
        rg,
        request.cluster_name,
        request.disk_encryption_set_id,
        encryption_at_host=request.enable_encryption_at_host,
    )
    emit_byok_event(
        "resource.encrypted",
        cluster.id,
        "aks-cluster",
        related={"disk-encryption-set": request.disk_encryption_set_id},
    )
    return cluster


@task(name="Validate node pool request", **STEP_RETRIES)
def validate_pool_request(credentials: AzureCredentials, request: NodePoolRequest) -> None:
    """The cluster exists and already uses the set (it cannot be added to new pools only)."""
    cluster = read_cluster(
        AzureClients.of(credentials, request.subscription_id),
        request.resource_group,
        request.cluster_name,
    )
    if cluster is None:
        raise InvalidRequest(
            "cluster_name",
            request.cluster_name,
            f"no such cluster in resource group {request.resource_group}",
        )
    check_cluster_des(cluster, request.disk_encryption_set_id, "disk_encryption_set_id")


@flow(name="add-encrypted-node-pool", persist_result=True, validate_parameters=False)
@refuse_quietly
def add_encrypted_node_pool(request: NodePoolRequest) -> ClusterInfo:
    """Check the cluster's set → one run per cluster → add the pool (its OS disks use the
    set) → verify."""
    request = parse_request(NodePoolRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    check_subscription_regions(credentials, sub, {})
    validate_pool_request(credentials, request)
    with resource_lock(cluster_id(sub, rg, request.cluster_name), wait=request.wait_for_other_run):
        return _add_pool(credentials, request, sub)


def _add_pool(credentials: AzureCredentials, request: NodePoolRequest, sub: str) -> ClusterInfo:
    """The writes of the node pool flow, once the request is valid and the cluster's lock
    held."""
    rg = request.resource_group
    if request.enable_encryption_at_host:
        ensure_encryption_at_host(credentials, sub)
    ensure_node_pool(
        credentials,
        sub,
        rg,
        request.cluster_name,
        request.pool_name,
        {
            "properties": {
                "count": request.node_count,
                "vmSize": request.node_vm_size,
                "type": "VirtualMachineScaleSets",
                "mode": "User",
                "osType": "Linux",
                "osDiskType": "Managed",
                "enableEncryptionAtHost": request.enable_encryption_at_host,
            }
        },
    )
    return verify_cluster(
        credentials,
        sub,
        rg,
        request.cluster_name,
        request.disk_encryption_set_id,
        request.pool_name,
        encryption_at_host=request.enable_encryption_at_host,
    )


@flow(name="encrypt-aks-data-disks", validate_parameters=False)
@refuse_quietly
def encrypt_aks_data_disks(request: DataDiskEncryptionRequest) -> str:
    """Check the set → one run per cluster → build the StorageClass (also as an artifact) →
    apply it with the cluster's user credentials. Returns created, replaced, recreated or
    unchanged."""
    request = parse_request(DataDiskEncryptionRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    check_subscription_regions(credentials, sub, {})
    read_des_by_id(credentials, request.subscription_id, request.disk_encryption_set_id)
    manifest = build_storage_class(
        request.storage_class_name,
        request.disk_encryption_set_id,
        request.provisioner,
        request.sku_name,
    )
    with resource_lock(cluster_id(sub, rg, request.cluster_name), wait=request.wait_for_other_run):
        return apply_storage_class(credentials, sub, rg, request.cluster_name, manifest)
