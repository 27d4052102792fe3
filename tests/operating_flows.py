"""Two flows chained through a persisted result, for tests/test_operating.py: `produce` runs on
one worker, `consume` on another reads its result from the shared result storage."""

from __future__ import annotations

import os
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client


@flow
def produce(value: str) -> dict[str, str]:
    """A result that only the shared storage can carry to another worker."""
    return {"value": value, "home": os.environ["PREFECT_HOME"]}


@flow
def consume(producer_run_id: str) -> dict[str, object]:
    """The producer run's result, read back through its state (its storage block)."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(producer_run_id)).state
    assert state is not None
    return {"read": state.result(), "home": os.environ["PREFECT_HOME"]}
