"""Which failures a step retries, decided in one place for every SDK: transient ones only
(throttling, 5xx, dropped connections, an SDK's own retries run out, an Azure operation that
failed with a retryable code); a rule broken, a permission or firewall refusal, a resource
missing or any of the project's own errors fail at once. The clients already retry a few
times; task retries are the slower second line."""

from __future__ import annotations

from typing import Any

import requests
from prefect.tasks import exponential_backoff

from byok.azure_errors import is_transient_azure
from byok.errors import ByokError
from clients.lazy import if_loaded

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# COS (S3) throttling and server-side failures.
# https://cloud.ibm.com/docs/cloud-object-storage?topic=cloud-object-storage-compatibility-common
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
)
# SoftLayer answers rate limiting with this exception name as its fault code (HTTP 429 on REST).
# https://sldn.softlayer.com/article/rate-limits/
SOFTLAYER_THROTTLED = "SoftLayer_Exception_WebService_RateLimitExceeded"


def _softlayer_transient(exc: Any) -> bool:
    # TransportError(0, …): no answer (refused, reset, the transport's retries run out).
    code = exc.faultCode
    return code == 0 or code in TRANSIENT_STATUS or code == SOFTLAYER_THROTTLED


def is_transient(exc: BaseException | None) -> bool:
    """Whether an exception (Azure, IBM Cloud SDK, SoftLayer or COS) is worth retrying."""
    if exc is None or isinstance(exc, ByokError):
        return False
    if is_transient_azure(exc):
        return True
    # The IBM SDKs' classes only once imported: an Azure flow never loads them.
    if isinstance(exc, (ConnectionError, *if_loaded("ibm_botocore.exceptions:ConnectionError"))):
        return True
    # ibm-cloud-sdk-core raises RetryError when its own retries of 429/5xx run out.
    if isinstance(
        exc, requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError
    ):
        return True
    if isinstance(exc, if_loaded("ibm_cloud_sdk_core:ApiException")):
        return exc.status_code in TRANSIENT_STATUS
    if isinstance(exc, if_loaded("SoftLayer:SoftLayerAPIError")):
        return _softlayer_transient(exc)
    if isinstance(exc, if_loaded("ibm_botocore.exceptions:ClientError")):
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
