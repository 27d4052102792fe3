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
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    jitter: float = 0.25,
    on_retry: Callable[[Exception, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Return `call()`; while it raises an exception `retryable` accepts, wait (doubling from
    `first_delay` up to `max_delay`, ± `jitter` of it) and call again, until
    `timeout_seconds` have passed, when the last exception is raised."""
    deadline = clock() + timeout_seconds
    delay = first_delay
    while True:
        try:
            return call()
        except Exception as exc:
            remaining = deadline - clock()
            if not retryable(exc) or remaining <= 0:
                raise
            wait = min(remaining, delay * (1 + random.uniform(-jitter, jitter)))
            if on_retry:
                on_retry(exc, wait)
            sleep(wait)
            delay = min(max_delay, delay * 2)
