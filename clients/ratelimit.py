"""The azure-core pipeline policy that paces ARM requests with the process's token buckets
(`byok.ratelimit`): placed after the retry policy, so every attempt, and every poll of a
long-running operation (the poller sends through the client's pipeline), draws a token. One
set of buckets per credentials block and process; a Dask worker process paces to its share."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy

from byok.ratelimit import (
    REMAINING_HEADER,
    BucketKey,
    Limiter,
    RateLimits,
    kind_of,
    subscription_of,
)


class Buckets(Protocol):
    """Where the buckets live: a `Limiter` in this process, or one shared by processes."""

    def reserve(self, key: BucketKey) -> float: ...
    def settle(
        self, key: BucketKey, remaining: float | None = None, retry_after: float | None = None
    ) -> None: ...


def dask_share() -> float:
    """Into how many shares this process splits ARM's buckets: on a Dask cluster, its workers
    over the workers living in this process (every worker process of the cluster draws on the
    same ARM buckets; `bench/rate_limits.py` measured an even split closest to the limit
    without 429s), counted when the buckets are made; 1 outside Dask."""
    if "distributed" not in sys.modules:  # not imported: this process is no Dask worker
        return 1.0
    from distributed import get_client, get_worker
    from distributed.worker import Worker

    try:
        get_worker()
    except ValueError:
        return 1.0
    workers = len(get_client().nthreads())
    here = max(1, len(Worker._instances))  # several when the cluster runs in threads
    return max(1.0, workers / here)


def arm_buckets() -> Limiter:
    """ARM's documented rates, this process's share of them."""
    return Limiter(RateLimits().share(dask_share()))


_lock = threading.Lock()
_factory: Callable[[], Buckets] = arm_buckets


def new_buckets() -> Buckets:
    """Buckets for one credentials block in this process (`arm_buckets` unless
    `use_buckets` said otherwise)."""
    with _lock:
        factory = _factory
    return factory()


def use_buckets(factory: Callable[[], Buckets] | None) -> None:
    """How this process makes its buckets from now on (None: `arm_buckets`)."""
    global _factory
    with _lock:
        _factory = factory or arm_buckets


def retry_after_seconds(value: str | None) -> float:
    """Retry-After in seconds (ARM sends whole seconds); 1 when absent or unreadable."""
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


class RateLimitPolicy(HTTPPolicy[Any, Any]):
    """Wait for a token of the request's (subscription, principal, kind) bucket before sending;
    correct the bucket from ARM's remaining-requests header, empty it on 429 for Retry-After.
    Requests outside a subscription (tenant level, Key Vault data plane) pass unpaced."""

    def __init__(
        self,
        principal: str,
        buckets: Buckets,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.principal = principal
        self._buckets = buckets
        self._sleep = sleep

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        http = request.http_request
        subscription = subscription_of(http.url)
        if subscription is None:
            return self.next.send(request)
        kind = kind_of(http.method)
        key: BucketKey = (subscription, self.principal, kind)
        buckets = self._buckets
        wait = buckets.reserve(key)
        remaining = retry_after = None
        try:
            if wait > 0:
                self._sleep(wait)
            response = self.next.send(request)
            answer = response.http_response
            if answer.status_code == 429:
                retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
            else:
                header = answer.headers.get(REMAINING_HEADER.format(kind=kind))
                remaining = float(header) if header and header.isdigit() else None
            return response
        finally:
            buckets.settle(key, remaining, retry_after)
