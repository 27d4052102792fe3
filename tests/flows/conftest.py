"""Fixtures of the flow tests that need deployments and a worker."""

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

ROOT = Path(__file__).resolve().parents[2]


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
