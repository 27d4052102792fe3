"""Procedure C, steps 5-7: an AKS cluster whose node OS disks are encrypted by a disk
encryption set, node pools on it, and data disks encrypted through a StorageClass.

create-encrypted-aks-cluster: check the subscription, region, version and set (double
encryption: its type) → one run per cluster → EncryptionAtHost feature (when asked) →
resource group → cluster with node OS disks encrypted by the set → verify.
add-encrypted-node-pool: check the cluster uses the set → one run per cluster → feature (when
asked) → pool → verify. encrypt-aks-data-disks: check the set → build the StorageClass →
one run per cluster → apply it with the cluster's user credentials."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.aks_models import (
    ENCRYPTION_AT_HOST,
    ENCRYPTION_AT_HOST_WAIT,
    AksClusterRequest,
    ClusterInfo,
    DataDiskEncryptionRequest,
    NodePoolRequest,
    cluster_id,
)
from byok.outcomes import Plan
from byok.parameters import parse_request
from tasks.aks import (
    apply_storage_class,
    build_storage_class,
    check_des,
    ensure_cluster,
    ensure_node_pool,
    plan_encrypted_cluster,
    plan_node_pool,
    plan_storage_class,
    validate_cluster_request,
    validate_pool_request,
    verify_cluster,
)
from tasks.events import emit_byok_event
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.registration import plan_required_feature, require_feature
from tasks.resource_group import ensure_resource_group
from tasks.run_lock import resource_lock
from tasks.subscription import check_subscription_regions, plan_resource_group

__all__ = [  # the requests and result, importable from the flows that take them
    "AksClusterRequest",
    "ClusterInfo",
    "DataDiskEncryptionRequest",
    "NodePoolRequest",
    "add_encrypted_node_pool",
    "create_encrypted_aks_cluster",
    "encrypt_aks_data_disks",
]


@flow(name="create-encrypted-aks-cluster", persist_result=True, validate_parameters=False)
@refuse_quietly
def create_encrypted_aks_cluster(
    request: AksClusterRequest, credentials: AzureCredentials | None = None
) -> ClusterInfo | Plan:
    """Check → one run per cluster → resource group → cluster with node OS disks encrypted by
    the set → verify.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(AksClusterRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    name, des_id = request.cluster_name, request.disk_encryption_set_id
    host = request.enable_encryption_at_host
    check_subscription_regions(credentials, sub, {"location": request.location})
    validate_cluster_request(credentials, request)
    field = "enable_encryption_at_host"
    if request.plan_only:
        if host:
            plan_required_feature(credentials, sub, *ENCRYPTION_AT_HOST, field)
        plan_resource_group(credentials, sub, rg)
        plan_encrypted_cluster(credentials, sub, request)
        return publish_plan("create-encrypted-aks-cluster")
    with resource_lock(cluster_id(sub, rg, name), wait=request.wait_for_other_run):
        if host:
            require_feature(credentials, sub, *ENCRYPTION_AT_HOST, field, *ENCRYPTION_AT_HOST_WAIT)
        ensure_resource_group(credentials, sub, rg, request.location)
        timeout = request.propagation_timeout_minutes * 60
        ensure_cluster(credentials, sub, request, timeout)
        cluster = verify_cluster(credentials, sub, rg, name, des_id, encryption_at_host=host)
        emit_byok_event(
            "resource.encrypted", cluster.id, "aks-cluster", related={"disk-encryption-set": des_id}
        )
        summarize("create-encrypted-aks-cluster")
        return cluster


@flow(name="add-encrypted-node-pool", persist_result=True, validate_parameters=False)
@refuse_quietly
def add_encrypted_node_pool(
    request: NodePoolRequest, credentials: AzureCredentials | None = None
) -> ClusterInfo | Plan:
    """Check the cluster's set → one run per cluster → add the pool (its OS disks use the
    set) → verify.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(NodePoolRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    name, pool, des_id = request.cluster_name, request.pool_name, request.disk_encryption_set_id
    host = request.enable_encryption_at_host
    check_subscription_regions(credentials, sub, {})
    validate_pool_request(credentials, request)
    field = "enable_encryption_at_host"
    if request.plan_only:
        if host:
            plan_required_feature(credentials, sub, *ENCRYPTION_AT_HOST, field)
        plan_node_pool(credentials, sub, request)
        return publish_plan("add-encrypted-node-pool")
    with resource_lock(cluster_id(sub, rg, name), wait=request.wait_for_other_run):
        if host:
            require_feature(credentials, sub, *ENCRYPTION_AT_HOST, field, *ENCRYPTION_AT_HOST_WAIT)
        ensure_node_pool(credentials, sub, request)
        cluster = verify_cluster(credentials, sub, rg, name, des_id, pool, encryption_at_host=host)
        summarize("add-encrypted-node-pool")
        return cluster


@flow(name="encrypt-aks-data-disks", validate_parameters=False)
@refuse_quietly
def encrypt_aks_data_disks(
    request: DataDiskEncryptionRequest, credentials: AzureCredentials | None = None
) -> str | Plan:
    """Check the set → one run per cluster → build the StorageClass (also as an artifact) →
    apply it with the cluster's user credentials. Returns created, updated (labels),
    recreated or unchanged.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(DataDiskEncryptionRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    check_subscription_regions(credentials, sub, {})
    check_des(credentials, request.subscription_id, request.disk_encryption_set_id)
    manifest = build_storage_class(
        request.storage_class_name,
        request.disk_encryption_set_id,
        request.provisioner,
        request.sku_name,
    )
    cluster = request.cluster_name
    if request.plan_only:
        plan_storage_class(credentials, sub, rg, cluster, manifest)
        return publish_plan("encrypt-aks-data-disks")
    with resource_lock(cluster_id(sub, rg, cluster), wait=request.wait_for_other_run):
        done = apply_storage_class(credentials, sub, rg, cluster, manifest)
        summarize("encrypt-aks-data-disks")
        return done
