"""AKS steps: validate a request (the set, the version, an existing cluster), a cluster
whose node OS disks use a disk encryption set, node pools on it, and the StorageClass that
encrypts data disks."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from blocks.azure import AzureCredentials
from byok.aks_models import (
    AksClusterRequest,
    NodePoolRequest,
    check_cluster_des,
    check_double_encryption,
    check_kubernetes_version,
    cluster_body,
    cluster_info,
    des_location,
    pool_body,
)
from byok.aks_models import ClusterInfo as ClusterInfo  # results persisted before name it here
from byok.azure_errors import is_propagation_delay, or_none
from byok.disk_encryption_set_models import DiskEncryptionSetInfo, des_info
from byok.errors import ResourceError, VerificationFailed
from byok.retrying import retry_while
from byok.sdk_values import text
from byok.storage_class import differences, storage_class, to_yaml
from byok.validation import InvalidRequest, check_name, same_region
from clients.aks_clusters import read_cluster
from clients.azure import AzureClients
from clients.kubernetes import storage_api
from tasks.retry import STEP_RETRIES


def _read_des(
    credentials: AzureCredentials, subscription_id: str | None, des_id: str
) -> DiskEncryptionSetInfo:
    """The set named by an id, or InvalidRequest naming the field."""
    sub, resource_group, name = des_location(des_id)
    sets = AzureClients.of(credentials, subscription_id or sub).compute().disk_encryption_sets
    des = or_none(lambda: sets.get(resource_group, name))
    if des is None:
        raise InvalidRequest("disk_encryption_set_id", des_id, "no such disk encryption set")
    return des_info(des)


@task(name="Check the disk encryption set", **STEP_RETRIES)
def check_des(
    credentials: AzureCredentials, subscription_id: str | None, des_id: str
) -> DiskEncryptionSetInfo:
    """The set named by `disk_encryption_set_id` exists (InvalidRequest otherwise)."""
    return _read_des(credentials, subscription_id, des_id)


@task(name="Validate cluster request", **STEP_RETRIES)
def validate_cluster_request(credentials: AzureCredentials, request: AksClusterRequest) -> None:
    """Version, the set's existence and region, an existing cluster's set: before any write."""
    check_name("resource_group", "resource_group", request.resource_group)
    check_kubernetes_version("kubernetes_version", request.kubernetes_version)
    des = _read_des(credentials, request.subscription_id, request.disk_encryption_set_id)
    same_region("location", request.location, des.location, f"disk encryption set '{des.name}'")
    check_double_encryption(request, des)
    cluster = read_cluster(
        AzureClients.of(credentials, request.subscription_id),
        request.resource_group,
        request.cluster_name,
    )
    if cluster is not None:
        check_cluster_des(cluster, request.disk_encryption_set_id, "disk_encryption_set_id")


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


@task(name="Create the cluster with encrypted OS disks", **STEP_RETRIES)
def ensure_cluster(
    credentials: AzureCredentials,
    subscription_id: str,
    request: AksClusterRequest,
    timeout_seconds: float,
) -> ClusterInfo:
    """Create the cluster (`az aks create --node-osdisk-diskencryptionsetid`); an existing one
    must already use the set. A DES whose key access is still propagating is retried."""
    resource_group, name = request.resource_group, request.cluster_name
    clients = AzureClients.of(credentials, subscription_id)
    clusters = clients.container_service().managed_clusters
    existing = read_cluster(clients, resource_group, name)
    if existing is not None:
        check_cluster_des(existing, request.disk_encryption_set_id, "disk_encryption_set_id")
        if text(existing.properties.provisioning_state) != "Failed":
            get_run_logger().info("Cluster %s exists with the disk encryption set", name)
            return cluster_info(existing)
        get_run_logger().info("Cluster %s is Failed: applying it again", name)
    cluster = retry_while(
        lambda: clusters.begin_create_or_update(
            resource_group, name, cluster_body(request)
        ).result(),
        is_propagation_delay,
        timeout_seconds=timeout_seconds,
        first_delay=2,
        on_retry=lambda exc, wait: get_run_logger().info(
            "Disk encryption set not usable yet; retrying in %.1f s", wait
        ),
    )
    get_run_logger().info("Created cluster %s", name)
    return cluster_info(cluster)


@task(name="Verify the cluster's disk encryption set", **STEP_RETRIES)
def verify_cluster(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    des_id: str,
    pool: str | None = None,
    encryption_at_host: bool = False,
) -> ClusterInfo:
    """The cluster reports the set (and the pool exists, when named, with encryption at host
    when asked: the named pool, else every pool)."""
    cluster = read_cluster(AzureClients.of(credentials, subscription_id), resource_group, name)
    if cluster is None:
        raise ResourceError(f"{resource_group}/{name}", "the cluster vanished")
    check_cluster_des(cluster, des_id, "disk_encryption_set_id")
    info = cluster_info(cluster)
    if pool and pool not in info.node_pools:
        raise VerificationFailed(info.id, f"the cluster does not report node pool {pool}")
    lacking = set([pool] if pool else info.node_pools) - set(info.host_encrypted_pools)
    if encryption_at_host and lacking:
        raise VerificationFailed(
            info.id, f"node pools without encryption at host: {', '.join(sorted(lacking))}"
        )
    return info


@task(name="Add the node pool", **STEP_RETRIES)
def ensure_node_pool(
    credentials: AzureCredentials, subscription_id: str, request: NodePoolRequest
) -> None:
    """Create the pool (`az aks nodepool add`); its OS disks use the cluster's set."""
    resource_group, cluster, name = request.resource_group, request.cluster_name, request.pool_name
    pools = AzureClients.of(credentials, subscription_id).container_service().agent_pools
    try:
        pools.get(resource_group, cluster, name)
        get_run_logger().info("Node pool %s exists", name)
        return
    except ResourceNotFoundError:
        pass
    pools.begin_create_or_update(resource_group, cluster, name, pool_body(request)).result()
    get_run_logger().info("Added node pool %s to %s", name, cluster)


@task(name="Build the StorageClass")
def build_storage_class(name: str, des_id: str, provisioner: Any, sku_name: str) -> dict[str, Any]:
    """The manifest, also published as an artifact for users who apply it themselves."""
    manifest = storage_class(name, des_id, provisioner, sku_name)
    create_markdown_artifact(
        key="byok-storage-class",
        markdown=f"# StorageClass `{name}`\n\nApply with `kubectl apply -f byok-azure-disk.yaml`:"
        f"\n\n```yaml\n{to_yaml(manifest)}```\n",
        description="StorageClass encrypting new data disks with the disk encryption set",
    )
    return manifest


@task(name="Apply the StorageClass", **STEP_RETRIES)
def apply_storage_class(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    cluster: str,
    manifest: dict[str, Any],
) -> str:
    """Apply with the cluster's user credentials: create; equal → nothing; labels differ →
    replace; immutable fields differ → delete and create (a StorageClass only affects new
    volumes). Returns what was done."""
    from kubernetes.client import ApiException  # the kubernetes SDK loads on first use

    clusters = AzureClients.of(credentials, subscription_id).container_service().managed_clusters
    credentials_result = clusters.list_cluster_user_credentials(resource_group, cluster)
    api = storage_api(bytes((credentials_result.kubeconfigs or [])[0].value or b""))
    name = manifest["metadata"]["name"]
    try:
        actual = api.api_client.sanitize_for_serialization(api.read_storage_class(name))
    except ApiException as exc:
        if exc.status != 404:
            raise
        api.create_storage_class(manifest)
        get_run_logger().info("Created StorageClass %s", name)
        return "created"
    immutable, mutable = differences(manifest, actual)
    if immutable:
        api.delete_storage_class(name)
        api.create_storage_class(manifest)
        get_run_logger().info("Re-created StorageClass %s (%s changed)", name, ", ".join(immutable))
        return "recreated"
    if mutable:
        replacement = {
            **manifest,
            "metadata": {
                **manifest["metadata"],
                "resourceVersion": actual["metadata"]["resourceVersion"],
            },
        }
        api.replace_storage_class(name, replacement)
        get_run_logger().info("Updated StorageClass %s labels", name)
        return "replaced"
    get_run_logger().info("StorageClass %s already as wanted", name)
    return "unchanged"
