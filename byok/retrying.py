"""Retrying a call while a condition holds, with bounded exponential backoff and jitter
(for effects that take time to propagate, such as access grants)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_while(
    call: Callable[[], T],
    retryable: Callable[[Exception], bool],
    *,
    timeout_seconds: float,
    max_attempts: int | None = None,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    jitter: float = 0.25,
    on_retry: Callable[[Exception, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Return `call()`; while it raises an exception `retryable` accepts, wait (doubling from
    `first_delay` up to `max_delay`, ± `jitter` of it) and call again, until
    `timeout_seconds` have passed or `max_attempts` calls were made, when the last exception
    is raised."""
    deadline = clock() + timeout_seconds
    delay = first_delay
    attempts = 0
    while True:
        try:
            attempts += 1
            return call()
        except Exception as exc:
            remaining = deadline - clock()
            if not retryable(exc) or remaining <= 0 or attempts == max_attempts:
                raise
            wait = min(remaining, delay * (1 + random.uniform(-jitter, jitter)))
            if on_retry:
                on_retry(exc, wait)
            sleep(wait)
            delay = min(max_delay, delay * 2)


# Methods whose repetition has the effect of one call: sent again after any transient failure.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def resend_allowed(method: str, status: int | None, retry_after: bool) -> bool:
    """Whether a request that failed may be sent again as it is.

    Idempotent methods: after any throttling, 5xx or dropped connection (`status` None). POST
    and PATCH only when the service certainly did not act on them: 429 (throttled), or 503
    with Retry-After (refused before serving); never after a lost answer (a reset or read error
    after sending, 500, 502, 504), where a second send could write twice. (A connection that
    was never made is the transport's `ServiceRequestError`, decided by the caller.)"""
    if method.upper() in IDEMPOTENT_METHODS:
        return status is None or status in (408, 429, 500, 502, 503, 504)
    return status == 429 or (status == 503 and retry_after)


def write_or_find(
    write: Callable[[], T],
    find: Callable[[], T | None],
    lost: Callable[[Exception], bool],
) -> T:
    """`write()`; when it fails in a way `lost` says the write may have happened anyway (a
    lost answer, a re-sent request refused as a conflict), `find()` the result by identity
    instead of writing again. The write's own error is raised when nothing is found."""
    try:
        return write()
    except Exception as exc:
        if not lost(exc):
            raise
        try:
            found = find()
        except Exception:
            raise exc from None
        if found is None:
            raise
        return found
