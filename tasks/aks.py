"""AKS steps: validate a request (the set, the version, an existing cluster), a cluster
whose node OS disks use a disk encryption set, node pools on it, and the StorageClass that
encrypts data disks."""

from __future__ import annotations

from typing import Any

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
    cluster_id,
    cluster_info,
    cluster_kept,
    des_location,
    pool_body,
    pool_kept,
)
from byok.aks_models import ClusterInfo as ClusterInfo  # results persisted before name it here
from byok.azure_errors import is_propagation_delay, or_none
from byok.disk_encryption_set_models import DiskEncryptionSetInfo, des_info
from byok.errors import ResourceError, VerificationFailed
from byok.outcomes import DONE, Change
from byok.retrying import retry_while
from byok.sdk_values import text
from byok.storage_class import differences, storage_class, to_yaml
from byok.validation import InvalidRequest, check_name, same_region
from clients.aks_clusters import read_cluster, user_kubeconfig
from clients.azure import AzureClients
from clients.kubernetes import storage_api
from tasks.outcomes import report
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


def _cluster_outcome(existing: Any, request: AksClusterRequest) -> tuple[str | None, str]:
    """What `ensure_cluster` does to the cluster as it is (None: it does not exist): create
    it, re-submit a Failed one, or keep it as it is (the note says where it differs)."""
    if existing is None:
        return "create", ""
    check_cluster_des(existing, request.disk_encryption_set_id, "disk_encryption_set_id")
    if text(existing.properties.provisioning_state) == "Failed":
        return "update", "re-submitted: it was Failed"
    return None, cluster_kept(existing, request)


@task(name="Create the cluster with encrypted OS disks", **STEP_RETRIES)
def ensure_cluster(
    credentials: AzureCredentials,
    subscription_id: str,
    request: AksClusterRequest,
    timeout_seconds: float,
) -> ClusterInfo:
    """Create the cluster (`az aks create --node-osdisk-diskencryptionsetid`); an existing one
    must already use the set, and is kept as it is (a Failed one is re-submitted). A DES
    whose key access is still propagating is retried."""
    resource_group, name = request.resource_group, request.cluster_name
    clients = AzureClients.of(credentials, subscription_id)
    clusters = clients.container_service().managed_clusters
    existing = read_cluster(clients, resource_group, name)
    verb, note = _cluster_outcome(existing, request)
    if existing is not None and verb is None:
        report(str(existing.id), None, note=note)
        return cluster_info(existing)
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
    report(str(cluster.id), verb, note=note or f"OS disks on {request.disk_encryption_set_id}")
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
    report(info.id, "verify", note=_verified(des_id, pool, encryption_at_host))
    return info


def _verified(des_id: str, pool: str | None, encryption_at_host: bool) -> str:
    """What `verify_cluster` checks, as its outcome's note."""
    host = ", encryption at host" if encryption_at_host else ""
    return f"{f'pool {pool}, ' if pool else ''}OS disks on {des_id.rsplit('/', 1)[-1]}{host}"


def _read_pool(clients: AzureClients, request: NodePoolRequest) -> Any:
    """The node pool, or None."""
    pools = clients.container_service().agent_pools
    return or_none(
        lambda: pools.get(request.resource_group, request.cluster_name, request.pool_name)
    )


def _pool_id(clients: AzureClients, request: NodePoolRequest) -> str:
    where = cluster_id(clients.subscription_id, request.resource_group, request.cluster_name)
    return f"{where}/agentPools/{request.pool_name}"


@task(name="Add the node pool", **STEP_RETRIES)
def ensure_node_pool(
    credentials: AzureCredentials, subscription_id: str, request: NodePoolRequest
) -> None:
    """Create the pool (`az aks nodepool add`); its OS disks use the cluster's set. An
    existing pool is kept as it is."""
    clients = AzureClients.of(credentials, subscription_id)
    existing = _read_pool(clients, request)
    if existing is not None:
        report(_pool_id(clients, request), None, note=pool_kept(existing, request))
        return
    clients.container_service().agent_pools.begin_create_or_update(
        request.resource_group, request.cluster_name, request.pool_name, pool_body(request)
    ).result()
    report(_pool_id(clients, request), "create", note=f"{request.node_count} node(s)")


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


def _storage(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, cluster: str
) -> Any:
    """The cluster's storage.k8s.io API, with its user credentials."""
    clients = AzureClients.of(credentials, subscription_id)
    return storage_api(user_kubeconfig(clients, resource_group, cluster))


def _storage_change(api: Any, manifest: dict[str, Any]) -> tuple[str | None, list[Change], Any]:
    """What applying `manifest` does: create, recreate (an immutable field differs), update
    (labels) or nothing (None); the fields that change; the StorageClass as it is (JSON)."""
    from kubernetes.client import ApiException  # the kubernetes SDK loads on first use

    try:
        actual = api.api_client.sanitize_for_serialization(
            api.read_storage_class(manifest["metadata"]["name"])
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        return "create", [], None
    immutable, mutable = differences(manifest, actual)
    verb = "recreate" if immutable else "update" if mutable else None
    return verb, immutable + mutable, actual


def _storage_class_id(subscription_id: str, resource_group: str, cluster: str, name: str) -> str:
    return f"{cluster_id(subscription_id, resource_group, cluster)}/storageclasses/{name}"


@task(name="Apply the StorageClass", **STEP_RETRIES)
def apply_storage_class(
    credentials: AzureCredentials,
    subscription_id: str,
    resource_group: str,
    cluster: str,
    manifest: dict[str, Any],
) -> str:
    """Apply with the cluster's user credentials: create; equal → nothing; labels differ →
    replace; immutable fields differ → delete and create (a StorageClass only affects new
    volumes). Returns what was done: created, updated, recreated or unchanged."""
    api = _storage(credentials, subscription_id, resource_group, cluster)
    name = manifest["metadata"]["name"]
    verb, changed, actual = _storage_change(api, manifest)
    if verb == "recreate":
        api.delete_storage_class(name)
    if verb in ("create", "recreate"):
        api.create_storage_class(manifest)
    if verb == "update":
        version = actual["metadata"]["resourceVersion"]
        metadata = {**manifest["metadata"], "resourceVersion": version}
        api.replace_storage_class(name, {**manifest, "metadata": metadata})
    where = _storage_class_id(subscription_id, resource_group, cluster, name)
    report(where, verb, changes=changed)
    return DONE[verb] if verb else "unchanged"


@task(name="Plan the StorageClass", **STEP_RETRIES)
def plan_storage_class(
    credentials: AzureCredentials,
    subscription_id: str,
    resource_group: str,
    cluster: str,
    manifest: dict[str, Any],
) -> None:
    """What `apply_storage_class` would do, from reads only."""
    api = _storage(credentials, subscription_id, resource_group, cluster)
    verb, changed, _ = _storage_change(api, manifest)
    where = _storage_class_id(
        subscription_id, resource_group, cluster, manifest["metadata"]["name"]
    )
    report(where, verb, step="Apply the StorageClass", changes=changed, planned=True)


@task(name="Plan the encrypted cluster", **STEP_RETRIES)
def plan_encrypted_cluster(
    credentials: AzureCredentials, subscription_id: str, request: AksClusterRequest
) -> None:
    """What the cluster and verify steps of create-encrypted-aks-cluster would do, from
    reads only."""
    clients = AzureClients.of(credentials, subscription_id)
    existing = read_cluster(clients, request.resource_group, request.cluster_name)
    verb, note = _cluster_outcome(existing, request)
    where = cluster_id(clients.subscription_id, request.resource_group, request.cluster_name)
    step = "Create the cluster with encrypted OS disks"
    report(where, verb, step=step, note=note, planned=True)
    des, host = request.disk_encryption_set_id, request.enable_encryption_at_host
    note = _verified(des, None, host)
    report(
        where, "verify", step="Verify the cluster's disk encryption set", note=note, planned=True
    )


@task(name="Plan the node pool", **STEP_RETRIES)
def plan_node_pool(
    credentials: AzureCredentials, subscription_id: str, request: NodePoolRequest
) -> None:
    """What the pool and verify steps of add-encrypted-node-pool would do, from reads only."""
    clients = AzureClients.of(credentials, subscription_id)
    existing = _read_pool(clients, request)
    where = _pool_id(clients, request)
    note = pool_kept(existing, request) if existing is not None else ""
    verb = None if existing is not None else "create"
    report(where, verb, step="Add the node pool", note=note, planned=True)
    des, host = request.disk_encryption_set_id, request.enable_encryption_at_host
    note = _verified(des, request.pool_name, host)
    cluster = cluster_id(clients.subscription_id, request.resource_group, request.cluster_name)
    report(
        cluster, "verify", step="Verify the cluster's disk encryption set", note=note, planned=True
    )
