# mypy: disable-error-code="union-attr"
# (the SDK types every field Optional; a cluster Azure returns has them: see pyproject.toml)
"""AKS requests, results and rules (no Prefect import): the requests of the cluster, node
pool and data-disk flows, the cluster as later steps need it, the request bodies, and the
checks of a cluster's disk encryption set and Kubernetes version."""

from __future__ import annotations

from azure.mgmt.containerservice import models as cs
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id, resource_id
from pydantic import BaseModel, Field

from byok.disk_encryption_set_models import DiskEncryptionSetInfo
from byok.errors import InvalidRequest
from byok.outcomes import PLAN_ONLY
from byok.parameters import AZURE_BLOCK_NAME
from byok.sdk_values import text
from byok.storage_class import Provisioner

ENCRYPTION_AT_HOST = ("Microsoft.Compute", "EncryptionAtHost")
ENCRYPTION_AT_HOST_WAIT = (15 * 60, 5)  # timeout and poll seconds of its registration
DOUBLE_ENCRYPTION = "EncryptionAtRestWithPlatformAndCustomerKeys"
MIN_KUBERNETES = (1, 17)

_DES_FIELD = Field(
    ...,
    description="Resource id of the disk encryption set (see the "
    "prepare-disk-encryption-set flow).",
)
_BLOCK_FIELD = Field(None, description=AZURE_BLOCK_NAME)
_HOST_FIELD = Field(
    False,
    description="Encryption at host: temp disks and caches encrypted too (registers the "
    "subscription's Microsoft.Compute/EncryptionAtHost feature).",
)
_WAIT_FIELD = Field(
    False,
    description="When another run is working on this cluster: wait for it (default: fail at once).",
)


class ClusterInfo(BaseModel):
    """A cluster as later steps and flows need it."""

    id: str
    name: str
    location: str
    kubernetes_version: str
    disk_encryption_set_id: str | None
    node_pools: list[str]
    host_encrypted_pools: list[str] = []  # pools with encryption at host


class AksClusterRequest(BaseModel):
    """A new cluster whose node OS disks use a disk encryption set."""

    azure_credentials_block: str | None = _BLOCK_FIELD
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
    plan_only: bool = PLAN_ONLY


class NodePoolRequest(BaseModel):
    """A node pool added to a cluster that uses a disk encryption set."""

    azure_credentials_block: str | None = _BLOCK_FIELD
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
    plan_only: bool = PLAN_ONLY


class DataDiskEncryptionRequest(BaseModel):
    """The StorageClass that encrypts new data disks of a cluster."""

    azure_credentials_block: str | None = _BLOCK_FIELD
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
    plan_only: bool = PLAN_ONLY


def cluster_id(subscription: str, resource_group: str, name: str) -> str:
    """A managed cluster's resource id (what a run locks)."""
    return resource_id(
        subscription=subscription,
        resource_group=resource_group,
        namespace="Microsoft.ContainerService",
        type="managedClusters",
        name=name,
    )


def des_location(des_id: str) -> tuple[str, str, str]:
    """The subscription, resource group and name of a disk encryption set id, or
    InvalidRequest naming `disk_encryption_set_id`."""
    parts = parse_resource_id(des_id) if is_valid_resource_id(des_id) else {}
    if (
        str(parts.get("namespace", "")).lower() != "microsoft.compute"
        or str(parts.get("type", "")).lower() != "diskencryptionsets"
        or "child_type_1" in parts
    ):
        raise InvalidRequest(
            "disk_encryption_set_id",
            des_id,
            "not a disk encryption set id "
            "(/subscriptions/…/resourceGroups/…/providers/Microsoft.Compute/"
            "diskEncryptionSets/…)",
        )
    return str(parts["subscription"]), str(parts["resource_group"]), str(parts["name"])


def check_kubernetes_version(field: str, version: str) -> None:
    """OS-disk encryption with customer keys needs Kubernetes 1.17 or newer."""
    parts = version.split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        raise InvalidRequest(
            field, version, "a Kubernetes version is major.minor[.patch]"
        ) from None
    if major_minor < MIN_KUBERNETES:
        raise InvalidRequest(
            field, version, "customer-managed keys for OS disks need Kubernetes 1.17 or newer"
        )


def check_double_encryption(request: AksClusterRequest, des: DiskEncryptionSetInfo) -> None:
    """Double encryption needs a set of that type (fixed when the set is created)."""
    if request.double_encryption and des.encryption_type != DOUBLE_ENCRYPTION:
        raise InvalidRequest(
            "disk_encryption_set_id",
            request.disk_encryption_set_id,
            f"the set's encryption type is {des.encryption_type}; double encryption needs a set "
            f"of type {DOUBLE_ENCRYPTION} (a set's type is fixed when it is created)",
        )


def cluster_info(cluster: cs.ManagedCluster) -> ClusterInfo:
    """The typed summary of a cluster."""
    props = cluster.properties
    return ClusterInfo(
        id=str(cluster.id),
        name=str(cluster.name),
        location=str(cluster.location),
        kubernetes_version=str(props.kubernetes_version),
        disk_encryption_set_id=props.disk_encryption_set_id,
        node_pools=[str(p.name) for p in props.agent_pool_profiles or []],
        host_encrypted_pools=[
            str(p.name) for p in props.agent_pool_profiles or [] if p.enable_encryption_at_host
        ],
    )


def check_cluster_des(cluster: cs.ManagedCluster, des_id: str, field: str) -> None:
    """An existing cluster must already use `des_id`: it cannot be added afterwards."""
    actual = cluster.properties.disk_encryption_set_id
    if (actual or "").lower() != des_id.lower():
        raise InvalidRequest(
            field,
            des_id,
            f"cluster '{cluster.name}' was created "
            f"{'with ' + actual if actual else 'without a disk encryption set'}"
            "; OS-disk encryption is set only when a cluster is created: "
            "create a new cluster to use this disk encryption set",
        )


def cluster_body(request: AksClusterRequest) -> cs.ManagedCluster:
    """The managed cluster of `az aks create --node-osdisk-diskencryptionsetid`."""
    return cs.ManagedCluster(
        location=request.location,
        identity=cs.ManagedClusterIdentity(type="SystemAssigned"),
        properties=cs.ManagedClusterProperties(
            kubernetes_version=request.kubernetes_version,
            dns_prefix=request.cluster_name,
            disk_encryption_set_id=request.disk_encryption_set_id,
            agent_pool_profiles=[
                cs.ManagedClusterAgentPoolProfile(
                    name="system",
                    mode="System",
                    count=request.node_count,
                    vm_size=request.node_vm_size,
                    type="VirtualMachineScaleSets",
                    os_type="Linux",
                    os_disk_type="Managed",
                    enable_encryption_at_host=request.enable_encryption_at_host,
                )
            ],
        ),
    )


def pool_body(request: NodePoolRequest) -> cs.AgentPool:
    """The agent pool of `az aks nodepool add` (its OS disks use the cluster's set)."""
    return cs.AgentPool(
        properties=cs.AgentPoolManagedClusterAgentPoolProfileProperties(
            count=request.node_count,
            vm_size=request.node_vm_size,
            type_properties_type="VirtualMachineScaleSets",  # the SDK's name of "type"
            mode="User",
            os_type="Linux",
            os_disk_type="Managed",
            enable_encryption_at_host=request.enable_encryption_at_host,
        )
    )


def kept_as_is(asked: dict[str, tuple[object, object]]) -> str:
    """The note of an existing cluster or pool kept as it is where it differs from the
    request (field → (as it is, as asked)); empty when it does not."""
    differing = [f"{f} {have} (asked {want})" for f, (have, want) in asked.items() if have != want]
    return f"kept as it is: {', '.join(differing)}" if differing else ""


def cluster_kept(cluster: cs.ManagedCluster, request: AksClusterRequest) -> str:
    """How an existing cluster differs from the request (this tool creates clusters, it does
    not change them: `az aks upgrade` / `az aks scale` do)."""
    pools = cluster.properties.agent_pool_profiles or []
    system = next((p for p in pools if p.mode and text(p.mode) == "System"), None)
    return kept_as_is(
        {
            "kubernetesVersion": (
                cluster.properties.kubernetes_version,
                request.kubernetes_version,
            ),
            "system pool count": (system and system.count, request.node_count),
            "system pool vmSize": (system and system.vm_size, request.node_vm_size),
            "system pool encryptionAtHost": (
                bool(system and system.enable_encryption_at_host),
                request.enable_encryption_at_host,
            ),
        }
    )


def pool_kept(pool: cs.AgentPool, request: NodePoolRequest) -> str:
    """How an existing node pool differs from the request (kept as it is)."""
    return kept_as_is(
        {
            "count": (pool.properties.count, request.node_count),
            "vmSize": (pool.properties.vm_size, request.node_vm_size),
            "encryptionAtHost": (
                bool(pool.properties.enable_encryption_at_host),
                request.enable_encryption_at_host,
            ),
        }
    )
