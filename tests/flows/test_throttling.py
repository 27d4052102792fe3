"""A real flow against ARM throttling with tiny buckets: the SDKs wait out every 429 and the
run completes with no failed task."""

from __future__ import annotations

import asyncio

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from emulator.server import Emulator
from emulator.throttling import Limit, Limits, Throttle
from flows.disk_encryption_set import DiskEncryptionSetRequest, prepare_disk_encryption_set


async def task_states(flow_run_id: object) -> list[str]:
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [run.state.type.value for run in runs if run.state is not None]


@pytest.mark.slow
def test_des_flow_rides_through_empty_buckets(azure_block: str, emulator: Emulator) -> None:
    # a token a second: buckets run empty however fast or slow the machine is
    emulator.throttle = Throttle(Limits(reads=Limit(1, 1), writes=Limit(1, 1), deletes=Limit(1, 1)))
    request = DiskEncryptionSetRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-throttled",
        location="westeurope",
        vault_name="kv-throttled",
        key_name="des-key",
        des_name="des-throttled",
        propagation_timeout_minutes=0.5,
    )
    state = prepare_disk_encryption_set(request, return_state=True)
    assert state.is_completed(), state.message
    states = asyncio.run(task_states(state.state_details.flow_run_id))
    assert states and set(states) == {"COMPLETED"}
    assert emulator.arm.get(state.result().disk_encryption_set.id) is not None

    arm = [e for e in emulator.requests.find(path="^/subscriptions/") if e.origin == "main"]
    throttled = [e for e in arm if e.status == 429]
    assert len(throttled) > 0, "the buckets never ran empty"
    assert {e.bucket.rsplit("/", 1)[1] for e in throttled} <= {"reads", "writes", "deletes"}
    polls = [e for e in arm if "/operationStatuses/" in e.path or "/operationResults/" in e.path]
    assert all(e.bucket.endswith("/reads") for e in polls)
    print(f"{len(throttled)} answers 429 of {len(arm)} ARM requests")
