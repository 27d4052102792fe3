"""The fleet rotation deployment, its schedule turned on by a user, runs by itself and
rotates the selected key and the set on it:
the running `byok demo` (a real Prefect server with its scheduler, the deployments of
deployments/prefect.yaml, a process worker) and the set the demo prepared."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.schedules import IntervalSchedule

from blocks.azure import AzureCredentials
from clients.azure import AzureClients
from console.demo import DEMO_BLOCK
from tasks.events import emit_byok_event
from tests import prefect_server
from tests.conftest import Demo
from tests.flows.test_events import byok_events

DEPLOYMENT = "rotate-customer-keys/rotate-customer-keys-monthly"
SET = ("rg-byok-demo", "des-byok-demo")


async def turn_on_schedule(key_id: str) -> str:
    """What a user does in the UI: set the parameters, turn on a schedule (here: hourly from
    5 s on; the test turns it off after the first completed run). Not shorter: the worker
    takes a run up to 10 s before it is due (its prefetch), so with 15 s a second run could
    be under way when the test ends."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        await client.update_deployment(
            deployment.id,
            DeploymentUpdate(
                parameters={
                    "request": {
                        "azure_credentials_block": DEMO_BLOCK,
                        "key_ids": [key_id],
                        "pickup_timeout_minutes": 1,
                        "poll_seconds": 0.1,
                    }
                }
            ),
        )
        for schedule in deployment.schedules:
            await client.delete_deployment_schedule(deployment.id, schedule.id)
        first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        await client.create_deployment_schedules(
            deployment.id,
            [(IntervalSchedule(interval=dt.timedelta(hours=1), anchor_date=first), True)],
        )
        return str(deployment.id)


async def turn_off_schedules(deployment_id: str) -> None:
    async with get_client() as client:
        deployment = await client.read_deployment(deployment_id)
        for schedule in deployment.schedules:
            await client.delete_deployment_schedule(deployment.id, schedule.id)


async def completed_runs(deployment_id: str) -> int:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
        return sum(1 for r in runs if r.state and r.state.is_completed())


def test_turned_on_schedule_rotates_the_key(demo: Demo, prefect_harness: None) -> None:
    with prefect_server.using(demo.api):
        sets = AzureClients(AzureCredentials.load_saved(DEMO_BLOCK)).compute()
        before = sets.disk_encryption_sets.get(*SET).active_key.key_url
        deployment_id = asyncio.run(turn_on_schedule(before.rsplit("/", 1)[0]))
        try:
            deadline = time.monotonic() + 120
            while asyncio.run(completed_runs(deployment_id)) == 0:
                assert time.monotonic() < deadline, "the scheduled rotation never ran"
                time.sleep(1)
        finally:
            asyncio.run(turn_off_schedules(deployment_id))
        after = sets.disk_encryption_sets.get(*SET).active_key.key_url
    assert after != before and after.rsplit("/", 1)[0] == before.rsplit("/", 1)[0]
    # this process's events reach its own server again, not the demo's
    since = time.time() - 1
    emit_byok_event("test.marker", "after-the-demo", "test")
    assert [e["event"] for e in byok_events(since, ["after-the-demo"])] == ["byok.test.marker"]
