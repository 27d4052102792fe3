"""Exactly-once writes on IBM Cloud (no Prefect import): which SDK failures may hide a write
that happened (the answer was lost: a dropped connection, a 500/502/504 from a gateway), and
creation that, after such a failure, looks the resource up by its identity before creating
again. The SDK transports never re-send a non-idempotent write themselves (clients/ibm.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import requests
from ibm_botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from ibm_cloud_sdk_core import ApiException
from SoftLayer import SoftLayerAPIError

T = TypeVar("T")
# Answers that may come from after the write (a gateway's error, the service's own crash).
MAYBE_SERVED_STATUS = frozenset({500, 502, 504})
log = logging.getLogger(__name__)


def answer_lost(exc: BaseException) -> bool:
    """Whether a failed write may nevertheless have happened: its answer never arrived
    (connection dropped or timed out after sending) or was a 500/502/504."""
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True  # ibm-cloud-sdk-core lets requests' errors through
    if isinstance(exc, ConnectionClosedError | ReadTimeoutError):
        return True
    if isinstance(exc, ApiException):
        return exc.status_code in MAYBE_SERVED_STATUS
    if isinstance(exc, SoftLayerAPIError):  # TransportError (faultCode 0): no answer at all
        return exc.faultCode in MAYBE_SERVED_STATUS or exc.faultCode == 0
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in MAYBE_SERVED_STATUS
    return False


def create_once(create: Callable[[], T], find: Callable[[], T | None], what: str) -> T:
    """`create()`, and when its answer was lost, the resource `find()` finds by identity; only
    when it is not there, `create()` once more (a second lost answer is raised)."""
    try:
        return create()
    except Exception as exc:
        if not answer_lost(exc):
            raise
        found = find()
        if found is not None:
            log.info("The answer to creating %s was lost; it was created: reusing it", what)
            return found
        log.info("The answer to creating %s was lost and it does not exist: creating it", what)
    return create()
