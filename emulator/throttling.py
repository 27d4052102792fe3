"""ARM's subscription throttling: token buckets per subscription x principal x operation kind.

Azure Resource Manager (since 2024) limits each subscription and service principal with one
token bucket per kind of operation: reads 250 tokens refilling 25 per second, writes and
deletes 200 refilling 10 per second; every answer reports what is left in
`x-ms-ratelimit-remaining-subscription-<reads|writes|deletes>`, and an empty bucket answers 429
with `Retry-After`. Source: "Understand how Azure Resource Manager throttles requests",
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import jwt

from emulator.http import HttpError

Kind = Literal["reads", "writes", "deletes"]
KINDS: tuple[Kind, ...] = ("reads", "writes", "deletes")


@dataclass(frozen=True)
class Limit:
    """One bucket's size (its burst) and refill rate in tokens per second."""

    size: float
    rate: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        """'SIZE/RATE', e.g. '250/25'."""
        size, _, rate = text.partition("/")
        try:
            limit = cls(float(size), float(rate))
        except ValueError:
            limit = cls(0, 0)
        if limit.size < 1 or limit.rate <= 0:
            raise ValueError(f"limit = {text!r}: expected SIZE/RATE with SIZE >= 1 and RATE > 0")
        return limit


@dataclass(frozen=True)
class Limits:
    """The buckets' limits per operation kind (ARM's documented defaults)."""

    reads: Limit = field(default_factory=lambda: Limit(250, 25))
    writes: Limit = field(default_factory=lambda: Limit(200, 10))
    deletes: Limit = field(default_factory=lambda: Limit(200, 10))


def operation_kind(method: str) -> Kind:
    """Which bucket an HTTP method draws from."""
    if method in ("GET", "HEAD"):
        return "reads"
    return "deletes" if method == "DELETE" else "writes"


class _Bucket:
    def __init__(self, limit: Limit, now: float) -> None:
        self.limit, self.tokens, self.stamp = limit, limit.size, now

    def take(self, now: float) -> float | None:
        """Draw one token: None when drawn, else the seconds until one is available."""
        self.tokens = min(self.limit.size, self.tokens + (now - self.stamp) * self.limit.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.limit.rate


@dataclass(frozen=True)
class Drawn:
    """What a request drew from its bucket: the whole tokens left, or (empty bucket) the
    seconds until one is available."""

    subscription: str
    principal: str
    kind: Kind
    remaining: int
    retry_after: int | None = None

    @property
    def bucket(self) -> str:
        """The bucket's name, as the request log shows it."""
        return f"{self.subscription}/{self.principal}/{self.kind}"

    @property
    def headers(self) -> dict[str, str]:
        """ARM's header reporting the bucket's remainder."""
        return {f"x-ms-ratelimit-remaining-subscription-{self.kind}": str(self.remaining)}

    def refusal(self) -> HttpError:
        """ARM's 429 for an empty bucket; the code and message as quoted in
        https://github.com/MicrosoftDocs/azure-docs/issues/105248 and the page above."""
        return HttpError(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of '{self.kind[:-1]}' requests for subscription '{self.subscription}' "
            f"actor '{self.principal}' exceeded. Please try again after '{self.retry_after}' "
            "seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
            {"Retry-After": str(self.retry_after), **self.headers},
        )


class Throttle:
    """The buckets of every subscription x principal x kind, created full on first use."""

    def __init__(
        self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, Kind], _Bucket] = {}

    def take(self, subscription: str, principal: str, method: str) -> Drawn:
        """Draw a token for one request (`retry_after` set when the bucket is empty)."""
        kind = operation_kind(method)
        subscription = subscription.lower()
        key = (subscription, principal, kind)
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(getattr(self.limits, kind), now)
            wait = bucket.take(now)
            remaining = int(bucket.tokens)
        retry_after = None if wait is None else max(1, math.ceil(wait))
        return Drawn(subscription, principal, kind, remaining, retry_after)


def principal_of(authorization: str) -> str | None:
    """The caller's object id (else app id) from a bearer token, unverified: the routes
    authenticate; a request without a readable token draws from no bucket."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    principal = claims.get("oid") or claims.get("appid")
    return str(principal) if principal else None


def subscription_of(path: str) -> str | None:
    """The subscription id of an ARM path '/subscriptions/{id}/…', else None."""
    parts = path.split("/", 3)
    if len(parts) >= 3 and parts[1].lower() == "subscriptions" and parts[2]:
        return parts[2]
    return None
