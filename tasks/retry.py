"""Which failures a step retries: transient ones only (throttling, 5xx, dropped
connections), from any of the SDKs; a rule broken or a resource missing fails at once.
The clients already retry these a few times; task retries are the slower second line."""

from __future__ import annotations

from typing import Any

import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from ibm_botocore.exceptions import ClientError
from ibm_botocore.exceptions import ConnectionError as BotoConnectionError
from ibm_cloud_sdk_core import ApiException
from prefect.tasks import exponential_backoff
from SoftLayer import SoftLayerAPIError

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
)
_CONNECTION_ERRORS = (
    ServiceRequestError,
    ServiceResponseError,
    ConnectionError,
    requests.ConnectionError,
    BotoConnectionError,
)


def is_transient(exc: BaseException | None) -> bool:
    """Whether an exception (Azure, IBM Cloud SDK, SoftLayer or COS) is worth retrying."""
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if isinstance(exc, HttpResponseError | ApiException):
        return exc.status_code in TRANSIENT_STATUS
    if isinstance(exc, SoftLayerAPIError):
        return exc.faultCode in TRANSIENT_STATUS
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        return status in TRANSIENT_STATUS or code in TRANSIENT_S3_CODES
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
