"""ARM's subscription throttling: token buckets per subscription x principal x operation kind.

Azure Resource Manager (since 2024) limits each subscription and service principal with one
token bucket per kind of operation: reads 250 tokens refilling 25 per second, writes and
deletes 200 refilling 10 per second; every answer reports what is left in
`x-ms-ratelimit-remaining-subscription-<reads|writes|deletes>`, and an empty bucket answers 429
with `Retry-After`. Source: "Understand how Azure Resource Manager throttles requests",
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling

Behind ARM, Microsoft.Compute throttles virtual machine calls with its own token buckets per
subscription and policy ("operation group"), each policy over a 3-minute and a 30-minute
window; every answer lists what is left as `x-ms-ratelimit-remaining-resource:
Microsoft.Compute/<policy>;<count>,…` and an empty bucket answers 429 OperationNotAllowed
with a TooManyRequests detail naming the policy. Sources: "Troubleshooting API throttling
errors", https://learn.microsoft.com/troubleshoot/azure/virtual-machines/
troubleshooting-throttling-errors (headers, error shape, e.g. `HighCostGet3Min;159`) and
"Compute throttling limits", https://learn.microsoft.com/azure/virtual-machines/
compute-throttling-limits (token buckets per resource and subscription, per region).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import jwt

from emulator.http import HttpError, Response

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
class ComputePolicy:
    """One Microsoft.Compute throttling policy: the methods on virtual machines it counts and
    its bucket."""

    name: str
    methods: frozenset[str]
    limit: Limit


def _window(name: str, methods: str, requests: int, minutes: int) -> ComputePolicy:
    return ComputePolicy(name, frozenset(methods.split()), Limit(requests, requests / minutes / 60))


# The policy names are Azure's (the pages above); the page's table of numbers could not be
# read back, so the sizes are the emulator's: `requests` per window, refilled evenly over it.
COMPUTE_POLICIES: tuple[ComputePolicy, ...] = (
    _window("HighCostGet3Min", "GET HEAD", 240, 3),
    _window("HighCostGet30Min", "GET HEAD", 1200, 30),
    _window("PutVM3Min", "PUT PATCH", 240, 3),
    _window("PutVM30Min", "PUT PATCH", 1200, 30),
    _window("DeleteVM3Min", "DELETE", 240, 3),
    _window("DeleteVM30Min", "DELETE", 1200, 30),
)


@dataclass(frozen=True)
class Limits:
    """The buckets' limits per operation kind (ARM's documented defaults) and Compute's
    policies (none: Compute does not throttle)."""

    reads: Limit = field(default_factory=lambda: Limit(250, 25))
    writes: Limit = field(default_factory=lambda: Limit(200, 10))
    deletes: Limit = field(default_factory=lambda: Limit(200, 10))
    compute: tuple[ComputePolicy, ...] = COMPUTE_POLICIES


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
    compute: tuple[tuple[str, int], ...] = ()  # Compute's policies drawn from: (name, left)
    refused_by: str | None = None  # the Compute policy whose bucket was empty

    @property
    def bucket(self) -> str:
        """The bucket's name, as the request log shows it."""
        if self.refused_by:
            return f"{self.subscription}/Microsoft.Compute/{self.refused_by}"
        return f"{self.subscription}/{self.principal}/{self.kind}"

    @property
    def headers(self) -> dict[str, str]:
        """ARM's header reporting the bucket's remainder, and Compute's."""
        headers = {f"x-ms-ratelimit-remaining-subscription-{self.kind}": str(self.remaining)}
        if self.compute:
            headers["x-ms-ratelimit-remaining-resource"] = ",".join(
                f"Microsoft.Compute/{name};{left}" for name, left in self.compute
            )
        return headers

    def refusal(self) -> HttpError:
        """ARM's 429 for an empty bucket; the code and message as quoted in
        https://github.com/MicrosoftDocs/azure-docs/issues/105248 and the page above; or
        Compute's, as the troubleshooting page above shows it."""
        if self.refused_by:
            return ComputeThrottled(self.refused_by, self.retry_after or 1, self.headers)
        return HttpError(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of '{self.kind[:-1]}' requests for subscription '{self.subscription}' "
            f"actor '{self.principal}' exceeded. Please try again after '{self.retry_after}' "
            "seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
            {"Retry-After": str(self.retry_after), **self.headers},
        )


class ComputeThrottled(HttpError):
    """Compute's 429: OperationNotAllowed with a TooManyRequests detail naming the policy."""

    def __init__(self, policy: str, retry_after: int, headers: dict[str, str]) -> None:
        message = (
            "The server rejected the request because too many requests have been received "
            "for this subscription."
        )
        super().__init__(
            429, "OperationNotAllowed", message, {"Retry-After": str(retry_after), **headers}
        )
        self.policy = policy

    def response(self) -> Response:
        answer = super().response()
        detail = {"operationGroup": self.policy, "retryAfterSeconds": self.headers["Retry-After"]}
        answer.body["error"]["details"] = [
            {"code": "TooManyRequests", "target": self.policy, "message": json.dumps(detail)}
        ]
        return answer


class Throttle:
    """The buckets of every subscription x principal x kind, created full on first use."""

    def __init__(
        self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}

    def _bucket(self, key: tuple[str, str, str], limit: Limit, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit, now)
        return bucket

    def take(self, subscription: str, principal: str, method: str, path: str = "") -> Drawn:
        """Draw a token for one request (`retry_after` set when a bucket is empty): ARM's,
        then, for a virtual machine at `path`, one from each of Compute's policies."""
        kind = operation_kind(method)
        subscription = subscription.lower()
        with self._lock:
            now = self._clock()
            arm = self._bucket((subscription, principal, kind), getattr(self.limits, kind), now)
            wait = arm.take(now)
            remaining = int(arm.tokens)
            if wait is not None:
                return Drawn(subscription, principal, kind, remaining, max(1, math.ceil(wait)))
            policies = (
                [p for p in self.limits.compute if method in p.methods] if _is_vm(path) else []
            )
            buckets = [
                (p.name, self._bucket((subscription, "Microsoft.Compute", p.name), p.limit, now))
                for p in policies
            ]
            for name, bucket in buckets:
                wait = bucket.take(now)
                if wait is not None:
                    left = tuple((n, int(b.tokens)) for n, b in buckets)
                    retry = max(1, math.ceil(wait))
                    return Drawn(subscription, principal, kind, remaining, retry, left, name)
            left = tuple((n, int(b.tokens)) for n, b in buckets)
        return Drawn(subscription, principal, kind, remaining, compute=left)


def _is_vm(path: str) -> bool:
    """Whether an ARM path names virtual machines (a VM, their list, or a VM's action)."""
    return "/providers/microsoft.compute/virtualmachines" in path.lower()


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
