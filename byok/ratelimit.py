"""Client-side pacing of Azure Resource Manager requests: one token bucket per subscription,
principal and kind of operation, shaped like ARM's own, so that a fleet of requests finishes
near the limit instead of in storms of 429.

ARM (since 2024) gives each subscription and principal a bucket per kind: reads 250 tokens
refilling 25 per second, writes and deletes 200 refilling 10 per second; every answer reports
what is left in `x-ms-ratelimit-remaining-subscription-<reads|writes|deletes>`, and an empty
bucket answers 429 with `Retry-After`. Source: "Understand how Azure Resource Manager throttles
requests", https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling

A request reserves a token before it is sent; the bucket may go below zero (the reservations
of requests waiting their turn), and each waits for its own token, so waiting threads are
served in order without polling. The answers correct the estimate downwards (other clients of
the same principal draw from ARM's bucket too; its bucket may have started later than ours),
and a 429 empties it for its Retry-After."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Kind = Literal["reads", "writes", "deletes"]
KINDS: tuple[Kind, ...] = ("reads", "writes", "deletes")
REMAINING_HEADER = "x-ms-ratelimit-remaining-subscription-{kind}"


@dataclass(frozen=True)
class Rate:
    """A bucket's size (its burst) and refill in tokens per second."""

    size: float
    per_second: float

    def share(self, parts: float) -> Rate:
        """One of `parts` equal shares of this budget."""
        return Rate(self.size / parts, self.per_second / parts)


@dataclass(frozen=True)
class RateLimits:
    """The buckets' rates per kind: ARM's documented defaults."""

    reads: Rate = field(default_factory=lambda: Rate(250, 25))
    writes: Rate = field(default_factory=lambda: Rate(200, 10))
    deletes: Rate = field(default_factory=lambda: Rate(200, 10))

    def of(self, kind: Kind) -> Rate:
        """The rate of one kind."""
        rate: Rate = getattr(self, kind)
        return rate

    def share(self, parts: float) -> RateLimits:
        """One of `parts` equal shares of every bucket (one per process drawing on them)."""
        if parts < 1:
            raise ValueError(f"parts = {parts}: must be at least 1")
        return RateLimits(
            self.reads.share(parts), self.writes.share(parts), self.deletes.share(parts)
        )


def kind_of(method: str) -> Kind:
    """The bucket an HTTP method draws from (ARM: GET and HEAD read, DELETE deletes, the rest
    write)."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "reads"
    return "deletes" if method == "DELETE" else "writes"


def subscription_of(url: str) -> str | None:
    """The subscription id of an ARM URL '…/subscriptions/{id}/…' (lower case), else None:
    tenant-level requests draw from no subscription bucket."""
    parts = urlsplit(url).path.split("/")
    if len(parts) > 3 and parts[1].lower() == "subscriptions" and parts[2]:
        return parts[2].lower()
    return None


class TokenBucket:
    """One bucket; not thread-safe on its own (the `Limiter` locks). `outstanding` counts the
    requests that reserved a token and have had no answer yet."""

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.size
        self.outstanding = 0
        self._stamp = now

    def refill(self, now: float) -> float:
        """Add what flowed in since the last look (up to the size); the tokens now."""
        elapsed = max(0.0, now - self._stamp)
        self.tokens = min(self.rate.size, self.tokens + elapsed * self.rate.per_second)
        self._stamp = max(self._stamp, now)
        return self.tokens

    def reserve(self, now: float) -> float:
        """Take a token; the seconds to wait before it is there (0: go now)."""
        self.refill(now)
        self.tokens -= 1
        self.outstanding += 1
        return max(0.0, -self.tokens / self.rate.per_second)

    def settle(self, now: float, remaining: float | None, retry_after: float | None) -> None:
        """A request's answer came: the service's remaining tokens (its header), or its
        Retry-After (a 429), or neither. The service's count, less what the requests still
        outstanding will draw, bounds ours (never raises it: the answer may be older than our
        reservations); after a 429 no token comes before Retry-After."""
        self.refill(now)
        self.outstanding = max(0, self.outstanding - 1)
        if retry_after is not None:
            remaining = -retry_after * self.rate.per_second
        if remaining is not None:
            self.tokens = min(self.tokens, remaining - self.outstanding)


BucketKey = tuple[str, str, Kind]


class Limiter:
    """The buckets of every (subscription, principal, kind), made full on first use and
    shared by every thread that holds this limiter."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or RateLimits()
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[BucketKey, TokenBucket] = {}

    def _bucket(self, key: BucketKey, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.limits.of(key[2]), now)
        return bucket

    def reserve(self, key: BucketKey) -> float:
        """Reserve a token for one request; the seconds the caller must wait before sending."""
        with self._lock:
            now = self._clock()
            return self._bucket(key, now).reserve(now)

    def settle(
        self, key: BucketKey, remaining: float | None = None, retry_after: float | None = None
    ) -> None:
        """The answer to a reserved request (see `TokenBucket.settle`); every reservation is
        settled once, answered or not."""
        with self._lock:
            now = self._clock()
            self._bucket(key, now).settle(now, remaining, retry_after)

    def tokens(self, key: BucketKey) -> float:
        """The tokens a bucket holds now (negative: reservations waiting)."""
        with self._lock:
            now = self._clock()
            return self._bucket(key, now).refill(now)


def floor_seconds(requests: dict[Kind, int], limits: RateLimits | None = None) -> float:
    """The least time one bucket set allows for `requests` per kind: what exceeds each burst,
    at the refill rate; the slowest kind decides."""
    limits = limits or RateLimits()
    return max(
        (
            max(0.0, n - limits.of(kind).size) / limits.of(kind).per_second
            for kind, n in requests.items()
        ),
        default=0.0,
    )
