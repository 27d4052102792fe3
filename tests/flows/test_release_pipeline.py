"""The release pipeline: sets per region → encrypted image version → cluster and node pool,
chained by subflows, then again by deployments run by a real process worker."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import PREFECT_API_URL

from clients.azure import AzureClients
from emulator.server import Emulator
from flows.release_pipeline import ReleasePipelineRequest, release_pipeline
from tests.helpers import managed_image

ROOT = Path(__file__).resolve().parents[2]


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


def test_pipeline_by_subflows_and_its_rerun(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    request = pipeline_request(azure_block, managed_image(azure, "westeurope"), "subflows")
    result = release_pipeline(request)
    assert sorted(result.disk_encryption_sets) == ["eastus", "westeurope"]
    us_set = result.disk_encryption_sets["eastus"].disk_encryption_set
    assert us_set.location == "eastus"
    region = next(r for r in result.image_version.regions if r.name == "eastus")
    assert region.os_disk_encryption_set_id == us_set.id
    assert region.data_disk_encryption_set_ids == {0: us_set.id, 1: us_set.id}
    home = result.disk_encryption_sets["westeurope"].disk_encryption_set.id
    assert result.cluster.disk_encryption_set_id == home
    assert result.cluster.node_pools == ["system", "release"]
    assert release_pipeline(request) == result
    assert count(emulator, "Microsoft.Compute/diskEncryptionSets") == 2
    assert count(emulator, "Microsoft.Compute/galleries/images/versions") == 1
    assert len(emulator.requests.find("PUT", "versions/1.0.0$")) == 1


@pytest.fixture
def worker(prefect_harness: None) -> Iterator[str]:
    """Every deployment of deployments/prefect.yaml, deployed as a user does, and a process
    worker polling their pool."""
    import asyncio

    from prefect.client.schemas.actions import WorkPoolCreate

    pool = "byok-process"

    async def create_pool() -> None:
        async with get_client() as client:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    asyncio.run(create_pool())
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "BYOK_FLOWS_DIR": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            "deployments/prefect.yaml",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield pool
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_pipeline_by_deployments_starts_children_once(
    azure_block: str, emulator: Emulator, azure: AzureClients, worker: str
) -> None:
    request = pipeline_request(azure_block, managed_image(azure, "westeurope"), "deployments")
    result = release_pipeline(request)
    assert result.cluster.node_pools == ["system", "release"]

    async def child_runs() -> int:
        async with get_client() as client:
            runs = await client.read_flow_runs()
            return sum(1 for r in runs if r.deployment_id is not None)

    import asyncio

    first = asyncio.run(child_runs())
    assert first == 5  # two sets, the image, the cluster, the pool
    assert release_pipeline(request) == result
    assert asyncio.run(child_runs()) == first
