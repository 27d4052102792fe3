"""A release pipeline chaining the procedures: a disk encryption set per region → an image
version encrypted in those regions → an AKS cluster and node pool on the home region's set.

Two ways to chain: subflows (one process, typed results directly), or deployments through
`run_deployment` with idempotency keys derived from each child's request, so that a re-run
of the pipeline finds the children it already started instead of starting them again (the
children persist their results so the parent can read them back typed)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id
from prefect import flow, get_run_logger, task
from prefect.deployments import run_deployment
from pydantic import BaseModel, Field

from blocks.azure import AzureCredentials
from byok.errors import OperationFailed
from byok.parameters import parse_request
from byok.validation import (
    GalleryImageName,
    GalleryName,
    ImageVersionName,
    InvalidRequest,
    check_name,
)
from clients.azure import AzureClients
from flows.aks import (
    AksClusterRequest,
    NodePoolRequest,
    add_encrypted_node_pool,
    create_encrypted_aks_cluster,
)
from flows.disk_encryption_set import (
    DiskEncryptionSetRequest,
    DiskEncryptionSetResult,
    prepare_disk_encryption_set,
)
from flows.gallery import ImageVersionRequest, publish_encrypted_image_version
from tasks.aks import ClusterInfo
from tasks.gallery import ImageVersionResult
from tasks.refusal import refuse_quietly
from tasks.retry import STEP_RETRIES
from tasks.subscription import check_subscription_regions

ResultT = TypeVar("ResultT", bound=BaseModel)


class ReleasePipelineRequest(BaseModel):
    """Where and what to release."""

    azure_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK Azure Credentials' block."
    )
    resource_group: str = Field(..., description="Resource group of everything released.")
    regions: list[str] = Field(
        ..., min_length=1, description="Regions; the first is home (gallery, cluster)."
    )
    name_prefix: str = Field(
        "rel",
        pattern=r"^[a-z][a-z0-9]{0,7}$",
        description="Prefix of the vaults, keys and sets made per region.",
    )
    gallery_name: GalleryName = Field(..., description="Gallery (created if missing).")
    image_name: GalleryImageName = Field(..., description="Image definition (created if missing).")
    version: ImageVersionName = Field(..., description="Image version (major.minor.patch).")
    source_image_id: str = Field(..., description="Managed image to publish.")
    data_disk_luns: list[int] = Field(
        default_factory=list,
        description="Data-disk LUNs of the source, each encrypted with the region's set.",
    )
    cluster_name: str = Field(
        ...,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$",
        description="AKS cluster (created on the home set).",
    )
    pool_name: str = Field(
        "release", pattern=r"^[a-z][a-z0-9]{0,11}$", description="Node pool added for the release."
    )
    chain_by: Literal["subflows", "deployments"] = Field(
        "subflows",
        description="Run the children in this process, or as deployments "
        "(run_deployment with idempotency keys; needs a worker).",
    )
    poll_seconds: float = Field(30, gt=0, description="Seconds between checks.")


class ReleasePipelineResult(BaseModel):
    """What the pipeline released."""

    disk_encryption_sets: dict[str, DiskEncryptionSetResult]
    image_version: ImageVersionResult
    cluster: ClusterInfo


def idempotency_key(deployment: str, parameters: dict[str, Any]) -> str:
    """The same child request always gets the same key."""
    digest = hashlib.sha256(json.dumps([deployment, parameters], sort_keys=True).encode())
    return f"byok-{digest.hexdigest()[:32]}"


def chained(
    mode: str,
    child: Callable[..., Any],
    deployment: str,
    request: BaseModel,
    result_type: type[ResultT],
) -> ResultT:
    """Run a child flow as a subflow or through its deployment; returns its typed result."""
    if mode == "subflows":
        return result_type.model_validate(child(request))
    parameters = {"request": request.model_dump(mode="json")}
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


@task(name="Validate pipeline request", **STEP_RETRIES)
def validate_pipeline_request(
    credentials: AzureCredentials, request: ReleasePipelineRequest
) -> None:
    """Before the first child writes: the resource group's name, the source image exists and
    its data-disk LUNs are the ones to encrypt."""
    check_name("resource_group", "resource_group", request.resource_group)
    image = request.source_image_id
    p: Mapping[str, Any] = parse_resource_id(image) if is_valid_resource_id(image) else {}
    if f"{p.get('namespace')}/{p.get('type')}".lower() != "microsoft.compute/images":
        raise InvalidRequest("source_image_id", image, "not a managed image id")
    try:
        found = (
            AzureClients.of(credentials, p["subscription"])
            .compute()
            .images.get(p["resource_group"], p["name"])
        )
    except ResourceNotFoundError:
        raise InvalidRequest("source_image_id", image, "no such managed image") from None
    luns = sorted(int(d.lun) for d in found.properties.storage_profile.data_disks or [])
    if sorted(request.data_disk_luns) != luns:
        raise InvalidRequest(
            "data_disk_luns", request.data_disk_luns, f"the source image has data disks {luns}"
        )


@flow(name="release-pipeline", validate_parameters=False)
@refuse_quietly
def release_pipeline(request: ReleasePipelineRequest) -> ReleasePipelineResult:
    """Check the request (subscription, regions, names, source) → sets per region →
    encrypted image version in those regions → cluster and node pool on the home region's
    set."""
    request = parse_request(ReleasePipelineRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    check_subscription_regions(
        credentials,
        credentials.subscription_id,
        {f"regions[{i}]": region for i, region in enumerate(request.regions)},
    )
    validate_pipeline_request(credentials, request)
    common = {
        "azure_credentials_block": request.azure_credentials_block,
        "resource_group": request.resource_group,
    }
    sets: dict[str, DiskEncryptionSetResult] = {}
    for region in request.regions:
        short = region.replace(" ", "").lower()[:10]
        sets[region] = chained(
            request.chain_by,
            prepare_disk_encryption_set,
            "prepare-disk-encryption-set/prepare-disk-encryption-set",
            DiskEncryptionSetRequest(
                **common,
                location=region,
                vault_name=f"{request.name_prefix}-kv-{short}",
                key_name=f"{request.name_prefix}-key",
                des_name=f"{request.name_prefix}-des-{short}",
            ),
            DiskEncryptionSetResult,
        )
    home = request.regions[0]
    targets = []
    for region in request.regions:
        des = sets[region].disk_encryption_set.id
        encryption = ",".join([des, *[f"{lun},{des}" for lun in request.data_disk_luns]])
        targets.append({"name": region, "encryption": encryption})
    image = chained(
        request.chain_by,
        publish_encrypted_image_version,
        "publish-encrypted-image-version/publish-encrypted-image-version",
        ImageVersionRequest(
            **common,
            location=home,
            gallery_name=request.gallery_name,
            image_name=request.image_name,
            version=request.version,
            source={"managed_image_id": request.source_image_id},
            target_regions=targets,
            poll_seconds=request.poll_seconds,
        ),
        ImageVersionResult,
    )
    home_set = sets[home].disk_encryption_set.id
    chained(
        request.chain_by,
        create_encrypted_aks_cluster,
        "create-encrypted-aks-cluster/create-encrypted-aks-cluster",
        AksClusterRequest(
            **common,
            location=home,
            cluster_name=request.cluster_name,
            disk_encryption_set_id=home_set,
        ),
        ClusterInfo,
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
    )
    return ReleasePipelineResult(disk_encryption_sets=sets, image_version=image, cluster=cluster)
