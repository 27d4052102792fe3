"""A release pipeline chaining the procedures: a disk encryption set per region → an image
version encrypted in those regions → an AKS cluster and node pool on the home region's set.

Two ways to chain: subflows (one process, typed results directly), or deployments through
`run_deployment` with idempotency keys derived from each child's request, so that a re-run
of the pipeline finds the children it already started instead of starting them again (the
children persist their results so the parent can read them back typed). The pipeline's
summary has a row per child run (what the child did is in that run's own summary); a re-run
chained by deployments adopts the runs it finds. `plan_only` runs
each child with `plan_only` (by the same chain) and publishes their plans as the pipeline's;
the image and cluster children, which check the sets, are planned once the sets exist (until
then: `would run`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from pydantic import BaseModel

from blocks.azure import AzureCredentials
from byok.aks_models import ClusterInfo
from byok.disk_encryption_set_models import DiskEncryptionSetResult
from byok.errors import OperationFailed
from byok.gallery import ImageVersionResult
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.release_models import (
    ReleasePipelineRequest,
    ReleasePipelineResult,
    idempotency_key,
    in_pipeline,
    plan_later,
    sets_planned_to_exist,
)
from flows.aks import add_encrypted_node_pool, create_encrypted_aks_cluster
from flows.disk_encryption_set import prepare_disk_encryption_set
from flows.gallery import publish_encrypted_image_version
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.release_pipeline import add_child_run, add_to_plan, validate_pipeline_request
from tasks.subscription import check_subscription_regions

__all__ = ["ReleasePipelineRequest", "ReleasePipelineResult", "release_pipeline"]

ResultT = TypeVar("ResultT", bound=BaseModel)
SETS = "prepare-disk-encryption-set/prepare-disk-encryption-set"
IMAGE = "publish-encrypted-image-version/publish-encrypted-image-version"
CLUSTER = "create-encrypted-aks-cluster/create-encrypted-aks-cluster"
POOL = "add-encrypted-node-pool/add-encrypted-node-pool"


def chained(
    mode: str,
    child: Callable[..., Any],
    deployment: str,
    request: BaseModel,
    result_type: type[ResultT],
    credentials: AzureCredentials,
) -> ResultT:
    """Run a child flow as a subflow or through its deployment (the credentials block passed
    by reference, never by value); returns its typed result, its run kept in the pipeline's
    summary. A plan-only child is run again each time (no idempotency key: its plan must be
    read afresh)."""
    if mode == "subflows":
        state = child(request, credentials, return_state=True)
        run_id, value = state.state_details.flow_run_id, state.result()
    else:
        run_id, value = _deployed(deployment, request, result_type, credentials)
    result = result_type.model_validate(value)
    if isinstance(result, DiskEncryptionSetResult | ImageVersionResult | ClusterInfo):  # not a plan
        add_child_run(deployment.split("/")[0], result, run_id)
    return result


def _deployed(
    deployment: str, request: BaseModel, result_type: type[BaseModel], credentials: AzureCredentials
) -> tuple[UUID, Any]:
    """The child's run through its deployment: its id and result."""
    parameters: dict[str, Any] = {"request": request.model_dump(mode="json")}
    if credentials._block_document_id is not None:
        parameters["credentials"] = {
            "$ref": {"block_document_id": str(credentials._block_document_id)}
        }
    once = None if result_type is Plan else idempotency_key(deployment, parameters)
    run = run_deployment(deployment, parameters=parameters, idempotency_key=once)
    if run.state is None or not run.state.is_completed():
        raise OperationFailed(
            deployment,
            f"run {run.name} ended {run.state and run.state.name}: "
            f"{run.state and run.state.message}",
        )
    get_run_logger().info("%s: run %s", deployment, run.name)
    return run.id, run.state.result()


def planned(
    mode: str,
    child: Callable[..., Any],
    deployment: str,
    request: BaseModel,
    credentials: AzureCredentials,
) -> Plan:
    """The child's plan (run with plan_only), added to the pipeline's; a child that takes
    no plan_only is refused (it would write)."""
    if "plan_only" not in type(request).model_fields:
        raise TypeError(f"{deployment}: its request takes no plan_only")
    plan = chained(
        mode, child, deployment, request.model_copy(update={"plan_only": True}), Plan, credentials
    )
    add_to_plan(in_pipeline(plan))
    return plan


@flow(name="release-pipeline", validate_parameters=False)
@refuse_quietly
def release_pipeline(
    request: ReleasePipelineRequest, credentials: AzureCredentials | None = None
) -> ReleasePipelineResult | Plan:
    """Check the request (subscription, regions, names, source) → sets per region →
    encrypted image version in those regions → cluster and node pool on the home region's
    set. `plan_only`: the children's plans, nothing written.

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
    if request.plan_only:
        return plan_pipeline(request, credentials)
    sets: dict[str, DiskEncryptionSetResult] = {
        region: chained(
            request.chain_by,
            prepare_disk_encryption_set,
            SETS,
            request.set_request(region),
            DiskEncryptionSetResult,
            credentials,
        )
        for region in request.regions
    }
    image = chained(
        request.chain_by,
        publish_encrypted_image_version,
        IMAGE,
        request.image_request({r: s.disk_encryption_set.id for r, s in sets.items()}),
        ImageVersionResult,
        credentials,
    )
    home_set = sets[request.home].disk_encryption_set.id
    chained(
        request.chain_by,
        create_encrypted_aks_cluster,
        CLUSTER,
        request.cluster_request(home_set),
        ClusterInfo,
        credentials,
    )
    cluster = chained(
        request.chain_by,
        add_encrypted_node_pool,
        POOL,
        request.pool_request(home_set),
        ClusterInfo,
        credentials,
    )
    summarize("release-pipeline")
    return ReleasePipelineResult(disk_encryption_sets=sets, image_version=image, cluster=cluster)


def plan_pipeline(request: ReleasePipelineRequest, credentials: AzureCredentials) -> Plan:
    """Each child's plan in order; the children after the sets only once the sets exist."""
    mode, sub = request.chain_by, credentials.subscription_id
    plans = [
        planned(mode, prepare_disk_encryption_set, SETS, request.set_request(r), credentials)
        for r in request.regions
    ]
    sets = request.set_ids(sub)
    image = request.image_request(sets)
    later: list[tuple[Callable[..., Any], str, BaseModel, str]] = [
        (publish_encrypted_image_version, IMAGE, image, image.version_id(sub)),
        (create_encrypted_aks_cluster, CLUSTER, request.cluster_request(sets[request.home]), ""),
        (add_encrypted_node_pool, POOL, request.pool_request(sets[request.home]), ""),
    ]
    ready = sets_planned_to_exist(plans)
    for child, deployment, child_request, resource in later:
        if ready:
            planned(mode, child, deployment, child_request, credentials)
        else:
            add_to_plan([plan_later(deployment.split("/")[0], resource or request.cluster_name)])
    return publish_plan("release-pipeline")
