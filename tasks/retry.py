"""Which failures a step retries: transient ones only (throttling, 5xx, dropped
connections); a rule broken or a resource missing fails at once."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from prefect.tasks import exponential_backoff

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException | None) -> bool:
    """Whether an exception is worth retrying."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError | ConnectionError):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code in TRANSIENT_STATUS
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only transient failures."""
    try:
        state.result()
    except Exception as exc:  # the failure of the run being judged
        return is_transient(exc)
    return False


STEP_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
}
