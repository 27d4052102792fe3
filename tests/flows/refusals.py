"""Running a flow as a deployment would (the request in its JSON form) and reading what its
run recorded: the final state, the run's logs, the writes the emulator saw."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

from emulator.server import Emulator

WRITES = ("PUT", "POST", "PATCH", "DELETE")


def writes(emulator: Emulator) -> int:
    """How many writes (sign-ins aside) the emulator has served so far."""
    return sum(
        1
        for method in WRITES
        for entry in emulator.requests.find(method)
        if not entry.path.endswith("/oauth2/v2.0/token")
    )


def run_logs(flow_run_id: Any) -> list[str]:
    """The messages the run (and its task runs) logged to the Prefect API."""
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def refused(flow: Any, request: dict[str, Any]) -> str:
    """Run `flow` with `request`; assert the run ended Failed with no traceback in its logs;
    return the Failed state's message."""
    state = flow(request=request, return_state=True)
    assert state.is_failed(), state
    tracebacks = [m for m in run_logs(state.state_details.flow_run_id) if "Traceback" in m]
    assert not tracebacks, tracebacks[0]
    return str(state.message)
