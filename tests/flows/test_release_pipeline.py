"""The release pipeline: sets per region → encrypted image version → cluster and node pool,
chained by subflows, then again by deployments run by the running demo's process worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
)

from blocks.azure import AzureCredentials
from clients.azure import AzureClients
from console.demo import DEMO_BLOCK
from emulator.server import Emulator
from flows.release_pipeline import ReleasePipelineRequest, release_pipeline
from tests import prefect_server
from tests.conftest import Demo
from tests.flows.refusals import refused, writes
from tests.helpers import managed_image


def pipeline_request(block: str, image: str, chain_by: str) -> ReleasePipelineRequest:
    return ReleasePipelineRequest(
        azure_credentials_block=block,
        resource_group="rg-img",
        regions=["westeurope", "eastus"],
        gallery_name="releases",
        image_name="app",
        version="1.0.0",
        source_image_id=image,
        data_disk_luns=[0, 1],
        cluster_name="aks-rel",
        chain_by=chain_by,  # type: ignore[arg-type]
        poll_seconds=0.05,
    )


def count(emulator: Emulator, type_name: str) -> int:
    return sum(1 for r in emulator.arm.resources.values() if r["type"] == type_name)


def ran_children(
    result: Any, request: ReleasePipelineRequest, tables: dict[str, Any]
) -> list[tuple[str, str]]:
    """Checks a pipeline run by subflows (a set per region, the image version on them, the
    cluster and its pool on the home set; a summary row per child run); its (child, resource)
    rows."""
    assert sorted(result.disk_encryption_sets) == ["eastus", "westeurope"]
    us_set = result.disk_encryption_sets["eastus"].disk_encryption_set
    assert us_set.location == "eastus"
    region = next(r for r in result.image_version.regions if r.name == "eastus")
    assert region.os_disk_encryption_set_id == us_set.id
    assert region.data_disk_encryption_set_ids == {0: us_set.id, 1: us_set.id}
    home = result.disk_encryption_sets["westeurope"].disk_encryption_set.id
    assert result.cluster.disk_encryption_set_id == home
    assert result.cluster.node_pools == ["system", "release"]
    sets = [result.disk_encryption_sets[r].disk_encryption_set.id for r in request.regions]
    ids = [*sets, result.image_version.id, result.cluster.id, result.cluster.id]
    ran = list(zip((CHILDREN[0], *CHILDREN), ids, strict=True))  # a set per region
    summary = tables["release-pipeline-summary"]
    assert [(row["step"], row["resource"]) for row in summary] == ran
    assert all(
        row["outcome"].startswith("ran (flow run ")
        and row["outcome"].endswith(f"; its steps: the {row['step']}-summary artifact)")
        for row in summary
    ), summary
    return ran


CHILDREN = (
    "prepare-disk-encryption-set",
    "publish-encrypted-image-version",
    "create-encrypted-aks-cluster",
    "add-encrypted-node-pool",
)


async def child_runs() -> int:
    """Runs of the pipeline's child deployments on the demo's server."""
    async with get_client() as client:
        deployments = await client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(CHILDREN)))
        )
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[d.id for d in deployments])
            )
        )
        return len(runs)


@pytest.mark.slow  # five child runs, each a process the worker starts: a minute or more
def test_pipeline_by_deployments_starts_children_once(demo: Demo) -> None:
    """On the running demo (its server, deployments and worker, its emulator)."""
    with prefect_server.using(demo.api):
        azure = AzureClients(AzureCredentials.load_saved(DEMO_BLOCK))
        request = pipeline_request(DEMO_BLOCK, managed_image(azure, "westeurope"), "deployments")
        before = asyncio.run(child_runs())
        result = release_pipeline(request)
        assert result.cluster.node_pools == ["system", "release"]
        first = asyncio.run(child_runs())
        assert first - before == 5  # two sets, the image, the cluster, the pool
        assert release_pipeline(request) == result
        assert asyncio.run(child_runs()) == first


def test_bad_pipeline_requests_are_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    image = managed_image(azure, "westeurope")
    good = pipeline_request(azure_block, image, "subflows").model_dump(mode="json")
    before = writes(emulator)
    assert refused(release_pipeline, good | {"regions": ["westeurope", "mars-north"]}).startswith(
        "regions[1] = 'mars-north': not a region of this subscription"
    )
    assert refused(release_pipeline, good | {"image_name": "../../x"}).startswith(
        "request.image_name = '../../x': image definition names are 1-80"
    )
    assert refused(release_pipeline, good | {"data_disk_luns": [0]}) == (
        "data_disk_luns = [0]: the source image has data disks [0, 1]"
    )
    missing = image.replace("/images/", "/images/nope-")
    assert refused(release_pipeline, good | {"source_image_id": missing}) == (
        f"source_image_id = {missing!r}: no such managed image"
    )
    assert writes(emulator) == before
