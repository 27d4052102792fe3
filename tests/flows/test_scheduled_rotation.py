"""A rotation deployment whose schedule a user turned on runs by itself and rotates the key:
a real local Prefect server (its scheduler running), the deployments of
deployments/prefect.yaml, and a process worker — the demo's own pieces."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from console.demo import deploy_all, drain_prefect_workers, prefect_server, process_worker
from console.emulator_blocks import save_emulator_block
from emulator.server import Emulator
from flows.disk_encryption_set import DiskEncryptionSetRequest, prepare_disk_encryption_set

DEPLOYMENT = "rotate-disk-encryption-set-key/rotate-disk-encryption-set-key-monthly"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def turn_on_schedule(block: str) -> str:
    """What a user does in the UI: set the parameters, turn on a (here: 3 s) schedule."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        await client.update_deployment(
            deployment.id,
            DeploymentUpdate(
                parameters={
                    "request": {
                        "azure_credentials_block": block,
                        "resource_group": "rg-sched",
                        "des_name": "des-sched",
                        "timeout_minutes": 1,
                        "poll_seconds": 0.1,
                    }
                }
            ),
        )
        for schedule in deployment.schedules:
            await client.delete_deployment_schedule(deployment.id, schedule.id)
        await client.create_deployment_schedules(
            deployment.id, [(IntervalSchedule(interval=dt.timedelta(seconds=3)), True)]
        )
        return str(deployment.id)


async def completed_runs(deployment_id: str) -> int:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
        return sum(1 for r in runs if r.state and r.state.is_completed())


@pytest.mark.slow  # a real server, worker and deployments: minutes
def test_turned_on_schedule_rotates_the_key(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "1")
    monkeypatch.setenv("PREFECT_WORKER_QUERY_SECONDS", "1")
    with prefect_server(tmp_path, free_port()) as api, temporary_settings({PREFECT_API_URL: api}):
        save_emulator_block(emulator, "sched-azure")
        prepared = prepare_disk_encryption_set(
            DiskEncryptionSetRequest(
                azure_credentials_block="sched-azure",
                resource_group="rg-sched",
                location="westeurope",
                vault_name="kv-sched",
                key_name="k",
                des_name="des-sched",
            )
        )
        drain_prefect_workers()
        deploy_all(api)
        deployment_id = asyncio.run(turn_on_schedule("sched-azure"))
        with process_worker(api):
            deadline = time.monotonic() + 120
            while asyncio.run(completed_runs(deployment_id)) == 0:
                assert time.monotonic() < deadline, "the scheduled rotation never ran"
                time.sleep(1)
    des = emulator.arm.get(prepared.disk_encryption_set.id)
    assert des is not None
    active = des["properties"]["activeKey"]["keyUrl"]
    assert active != prepared.key.id and active.startswith(prepared.key.versionless_id + "/")
