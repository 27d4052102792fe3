"""ARM's subscription throttling: token buckets per subscription x principal x operation kind.

Azure Resource Manager (since 2024) limits each subscription and service principal with one
token bucket per kind of operation: reads 250 tokens refilling 25 per second, writes and
deletes 200 refilling 10 per second; every answer reports what is left in
`x-ms-ratelimit-remaining-subscription-<reads|writes|deletes>`, and an empty bucket answers 429
with `Retry-After`. Source: "Understand how Azure Resource Manager throttles requests",
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling

Behind ARM, Microsoft.Compute throttles virtual machine calls with its own token buckets, one
pair per policy (a kind of call): one bucket per virtual machine and one per subscription (and
region), each refilled every minute; every answer lists what is left as
`x-ms-ratelimit-remaining-resource: Microsoft.Compute/<policy>;<count>` and an empty bucket
answers 429 OperationNotAllowed with a TooManyRequests detail naming the policy. Sources:
"Compute throttling limits", https://learn.microsoft.com/azure/virtual-machines/
compute-throttling-limits (the policies, the calls each covers, both buckets' capacity and
refill per minute) and "Troubleshooting API throttling errors",
https://learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors
(headers, error shape, e.g. `Microsoft.Compute/HighCostGet;159`).
"""

from __future__ import annotations

import json
import math
import re
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
    """One Microsoft.Compute throttling policy: its bucket per virtual machine (None: the
    policy has none) and its bucket per subscription."""

    name: str
    resource: Limit | None
    subscription: Limit


def _per_minute(
    name: str, resource: tuple[int, int] | None, subscription: tuple[int, int]
) -> ComputePolicy:
    """A policy from the page's figures: (refill per minute, capacity) of each bucket."""

    def limit(refill: int, capacity: int) -> Limit:
        return Limit(capacity, refill / 60)

    return ComputePolicy(name, limit(*resource) if resource else None, limit(*subscription))


# The page's table for virtual machines; the names are the page's policy categories in the
# headers' spelling (the troubleshooting page shows `HighCostGet`).
COMPUTE_POLICIES: tuple[ComputePolicy, ...] = (
    _per_minute("PutVM", (4, 12), (500, 1500)),
    _per_minute("UpdateVM", (4, 12), (500, 1500)),
    _per_minute("DeleteVM", (4, 12), (500, 1500)),
    _per_minute("LowCostGet", (12, 36), (8000, 24000)),
    _per_minute("HighCostGet", None, (300, 900)),
    _per_minute("GetOperation", (15, 45), (5000, 15000)),
    _per_minute("VMGuestPatchOperations", (2, 6), (200, 600)),
)

_VMS = re.compile(
    r"/subscriptions/[^/]+(?:/resourcegroups/[^/]+)?/providers/microsoft\.compute"
    r"(?:/locations/[^/]+)?/virtualmachines(?P<vm>/[^/]+)?(?P<rest>/.*)?"
)
_OPERATION = re.compile(
    r"/subscriptions/[^/]+/providers/microsoft\.compute/locations/[^/]+/operation\w*/[^/]+"
)
_DELETING_ACTIONS = frozenset({"deallocate", "simulateeviction"})
_PATCH_ACTIONS = frozenset({"assesspatches", "installpatches"})
_READING_ACTIONS = frozenset({"instanceview", "vmsizes", "retrievebootdiagnosticsdata"})


def compute_policy(method: str, path: str) -> tuple[str, str | None] | None:
    """The Compute policy a request draws from and the resource whose bucket it also draws
    from (None: the subscription's only), per the page's table: a VM's reads, instance view,
    sizes, boot diagnostics and its extensions' and run commands' reads are low-cost gets;
    lists of VMs high-cost gets; create is PutVM; delete, deallocate and simulated eviction
    DeleteVM; patch assessment and installation their own policy; every other change to a VM,
    its extensions or run commands UpdateVM; the status of an async Compute operation
    GetOperation, per operation (the page names VM operations; a monitor's URL does not say
    whose operation it is, so every Compute operation counts)."""
    lowered = path.lower().rstrip("/")
    if _OPERATION.fullmatch(lowered):
        return ("GetOperation", lowered) if method == "GET" else None
    match = _VMS.fullmatch(lowered)
    if match is None:
        return None
    if not match["vm"]:
        return ("HighCostGet", None) if method == "GET" else None
    vm = lowered[: match.start("rest")] if match["rest"] else lowered
    rest = (match["rest"] or "").strip("/").split("/")
    if method in ("GET", "HEAD"):
        return "LowCostGet", vm
    if rest[0] in _READING_ACTIONS:
        return "LowCostGet", vm
    if rest[0] in _PATCH_ACTIONS:
        return "VMGuestPatchOperations", vm
    if rest == [""]:
        policy = {"PUT": "PutVM", "DELETE": "DeleteVM"}.get(method, "UpdateVM")
    else:
        policy = "DeleteVM" if rest[0] in _DELETING_ACTIONS else "UpdateVM"
    return policy, vm


@dataclass(frozen=True)
class Limits:
    """The buckets' limits per operation kind (ARM's documented defaults) and Compute's
    policies (a call whose policy is left out draws from none; none: Compute does not
    throttle)."""

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

    def wait(self, now: float) -> float | None:
        """Refill to `now`: None when a token is there, else the seconds until one is."""
        self.tokens = min(self.limit.size, self.tokens + (now - self.stamp) * self.limit.rate)
        self.stamp = now
        return None if self.tokens >= 1 else (1 - self.tokens) / self.limit.rate

    def take(self, now: float) -> float | None:
        """Draw one token: None when drawn, else the seconds until one is available."""
        wait = self.wait(now)
        if wait is None:
            self.tokens -= 1
        return wait


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
        self._policies = {p.name: p for p in self.limits.compute}

    def _bucket(self, key: tuple[str, str, str], limit: Limit, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit, now)
        return bucket

    def take(self, subscription: str, principal: str, method: str, path: str = "") -> Drawn:
        """Draw a token for one request (`retry_after` set when a bucket is empty): ARM's,
        then, for a Compute call with a policy, one from the policy's bucket for the resource
        and one from its bucket for the subscription (both or neither)."""
        kind = operation_kind(method)
        subscription = subscription.lower()
        with self._lock:
            now = self._clock()
            arm = self._bucket((subscription, principal, kind), getattr(self.limits, kind), now)
            wait = arm.take(now)
            remaining = int(arm.tokens)
            if wait is not None:
                return Drawn(subscription, principal, kind, remaining, max(1, math.ceil(wait)))
            drawn = compute_policy(method, path)
            policy = self._policies.get(drawn[0]) if drawn else None
            if drawn is None or policy is None:
                return Drawn(subscription, principal, kind, remaining)
            name, resource = drawn
            buckets = [
                self._bucket((subscription, "Microsoft.Compute", name), policy.subscription, now)
            ]
            if resource and policy.resource:
                buckets.append(
                    self._bucket((resource, "Microsoft.Compute", name), policy.resource, now)
                )
            waits = [w for w in (b.wait(now) for b in buckets) if w is not None]
            if not waits:
                for bucket in buckets:
                    bucket.tokens -= 1
            # the header shows the emptier bucket: what the next call of this policy can count on
            left = ((name, int(min(b.tokens for b in buckets))),)
            if waits:
                retry = max(1, math.ceil(max(waits)))
                return Drawn(subscription, principal, kind, remaining, retry, left, name)
        return Drawn(subscription, principal, kind, remaining, compute=left)


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
