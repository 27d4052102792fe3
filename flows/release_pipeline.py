"""A release pipeline chaining the procedures: a disk encryption set per region → an image
version encrypted in those regions → an AKS cluster and node pool on the home region's set.

Two ways to chain: subflows (one process, typed results directly), or deployments through
`run_deployment` with idempotency keys derived from each child's request, so that a re-run
of the pipeline finds the children it already started instead of starting them again (the
children persist their results so the parent can read them back typed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from pydantic import BaseModel

from blocks.azure import AzureCredentials
from byok.aks_models import ClusterInfo
from byok.disk_encryption_set_models import DiskEncryptionSetResult
from byok.errors import OperationFailed
from byok.gallery import ImageVersionResult
from byok.parameters import parse_request
from byok.release_models import ReleasePipelineRequest, ReleasePipelineResult, idempotency_key
from flows.aks import (
    AksClusterRequest,
    NodePoolRequest,
    add_encrypted_node_pool,
    create_encrypted_aks_cluster,
)
from flows.disk_encryption_set import prepare_disk_encryption_set
from flows.gallery import publish_encrypted_image_version
from tasks.refusal import refuse_quietly
from tasks.release_pipeline import validate_pipeline_request
from tasks.subscription import check_subscription_regions

__all__ = ["ReleasePipelineRequest", "ReleasePipelineResult", "release_pipeline"]

ResultT = TypeVar("ResultT", bound=BaseModel)


def chained(
    mode: str,
    child: Callable[..., Any],
    deployment: str,
    request: BaseModel,
    result_type: type[ResultT],
    credentials: AzureCredentials,
) -> ResultT:
    """Run a child flow as a subflow or through its deployment (the credentials block passed
    by reference, never by value); returns its typed result."""
    if mode == "subflows":
        return result_type.model_validate(child(request, credentials))
    parameters: dict[str, Any] = {"request": request.model_dump(mode="json")}
    if credentials._block_document_id is not None:
        parameters["credentials"] = {
            "$ref": {"block_document_id": str(credentials._block_document_id)}
        }
    run = run_deployment(
        deployment, parameters=parameters, idempotency_key=idempotency_key(deployment, parameters)
    )
    if run.state is None or not run.state.is_completed():
        raise OperationFailed(
            deployment,
            f"run {run.name} ended {run.state and run.state.name}: "
            f"{run.state and run.state.message}",
        )
    get_run_logger().info("%s: run %s", deployment, run.name)
    return result_type.model_validate(run.state.result())


@flow(name="release-pipeline", validate_parameters=False)
@refuse_quietly
def release_pipeline(
    request: ReleasePipelineRequest, credentials: AzureCredentials | None = None
) -> ReleasePipelineResult:
    """Check the request (subscription, regions, names, source) → sets per region →
    encrypted image version in those regions → cluster and node pool on the home region's
    set.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(ReleasePipelineRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    check_subscription_regions(
        credentials,
        credentials.subscription_id,
        {f"regions[{i}]": region for i, region in enumerate(request.regions)},
    )
    validate_pipeline_request(credentials, request)
    sets: dict[str, DiskEncryptionSetResult] = {
        region: chained(
            request.chain_by,
            prepare_disk_encryption_set,
            "prepare-disk-encryption-set/prepare-disk-encryption-set",
            request.set_request(region),
            DiskEncryptionSetResult,
            credentials,
        )
        for region in request.regions
    }
    image = chained(
        request.chain_by,
        publish_encrypted_image_version,
        "publish-encrypted-image-version/publish-encrypted-image-version",
        request.image_request({r: s.disk_encryption_set.id for r, s in sets.items()}),
        ImageVersionResult,
        credentials,
    )
    common = {
        "azure_credentials_block": request.azure_credentials_block,
        "resource_group": request.resource_group,
    }
    home_set = sets[request.home].disk_encryption_set.id
    chained(
        request.chain_by,
        create_encrypted_aks_cluster,
        "create-encrypted-aks-cluster/create-encrypted-aks-cluster",
        AksClusterRequest(
            **common,
            location=request.home,
            cluster_name=request.cluster_name,
            disk_encryption_set_id=home_set,
        ),
        ClusterInfo,
        credentials,
    )
    cluster = chained(
        request.chain_by,
        add_encrypted_node_pool,
        "add-encrypted-node-pool/add-encrypted-node-pool",
        NodePoolRequest(
            **common,
            cluster_name=request.cluster_name,
            pool_name=request.pool_name,
            disk_encryption_set_id=home_set,
        ),
        ClusterInfo,
        credentials,
    )
    return ReleasePipelineResult(disk_encryption_sets=sets, image_version=image, cluster=cluster)
