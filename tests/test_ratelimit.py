"""The client-side ARM token buckets on a fake clock: burst then refill, reservations served in
order, corrected down by the remaining-requests header, emptied by Retry-After; and the
pipeline policy that draws from them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from byok.ratelimit import (
    BucketKey,
    Limiter,
    Rate,
    RateLimits,
    floor_seconds,
    kind_of,
    subscription_of,
)
from clients.ratelimit import RateLimitPolicy, retry_after_seconds
from tests.helpers import ManualClock

SUB = "5f6a9e1c-0000-4000-8000-00000000b10c"
WRITES: BucketKey = (SUB, "app", "writes")


def limiter(clock: ManualClock, writes: Rate | None = None) -> Limiter:
    return Limiter(RateLimits(writes=writes or Rate(3, 2)), clock)


def test_defaults_are_arms_documented_buckets() -> None:
    limits = RateLimits()
    assert (limits.reads, limits.writes, limits.deletes) == (
        Rate(250, 25),
        Rate(200, 10),
        Rate(200, 10),
    )


def test_burst_then_one_token_per_refill_interval_in_order() -> None:
    clock = ManualClock(1000.0)
    buckets = limiter(clock)
    waits = [buckets.reserve(WRITES) for _ in range(6)]
    # 3 at once, then the waiting requests at 2 tokens/s: 0.5 s, 1 s, 1.5 s from now
    assert waits == [0, 0, 0, 0.5, 1.0, 1.5]
    clock.now += 1.5  # the three waiting requests have had their tokens
    assert buckets.tokens(WRITES) == 0
    clock.now += 60  # full again, never more than its size
    assert buckets.tokens(WRITES) == 3


def test_one_bucket_per_subscription_principal_and_kind() -> None:
    buckets = Limiter(RateLimits(Rate(1, 1), Rate(1, 1), Rate(1, 1)), ManualClock(1000.0))
    keys: list[BucketKey] = [
        (SUB, "app", "reads"),
        (SUB, "app", "writes"),
        (SUB, "app", "deletes"),
        (SUB, "other-app", "writes"),
        ("other-sub", "app", "writes"),
    ]
    assert [buckets.reserve(k) for k in keys] == [0] * 5
    assert [buckets.reserve(k) for k in keys] == [1] * 5


def test_the_remaining_header_lowers_the_estimate_never_raises_it() -> None:
    clock = ManualClock(1000.0)
    buckets = limiter(clock, Rate(200, 10))
    buckets.reserve(WRITES)
    buckets.settle(WRITES, remaining=5)  # another client of the principal drew from ARM's
    assert buckets.tokens(WRITES) == 5
    buckets.reserve(WRITES)
    buckets.settle(WRITES, remaining=150)  # an answer older than our own reservations
    assert buckets.tokens(WRITES) == 4
    assert [buckets.reserve(WRITES) for _ in range(5)] == [0] * 4 + [0.1]


def test_requests_still_outstanding_are_taken_from_the_services_count() -> None:
    clock = ManualClock(1000.0)
    buckets = limiter(clock, Rate(10, 20))
    assert [buckets.reserve(WRITES) for _ in range(4)] == [0] * 4
    # ARM's bucket started later than ours: it says 5 left after the first of our 4 requests
    buckets.settle(WRITES, remaining=5)
    assert buckets.tokens(WRITES) == 5 - 3  # the other three will draw from those 5


def test_retry_after_empties_the_bucket_for_that_long() -> None:
    clock = ManualClock(1000.0)
    buckets = limiter(clock, Rate(200, 10))
    buckets.reserve(WRITES)
    buckets.settle(WRITES, retry_after=3)
    assert buckets.reserve(WRITES) == pytest.approx(3.1)  # 3 s, then this request's token
    buckets.settle(WRITES)  # no answer (a dropped connection): the reservation is released
    clock.now += 10
    assert buckets.reserve(WRITES) == 0


def test_shares_and_floor() -> None:
    half = RateLimits().share(2)
    assert half.writes == Rate(100, 5) and half.reads == Rate(125, 12.5)
    with pytest.raises(ValueError, match="parts = 0: must be at least 1"):
        RateLimits().share(0)
    # 1,200 writes: 200 at once, 1,000 at 10/s; 300 reads fit in 250 + 2 s of refill
    assert floor_seconds({"writes": 1200, "reads": 300}) == 100
    assert floor_seconds({"reads": 100}) == 0
    assert floor_seconds({}) == 0


@pytest.mark.parametrize(
    ("method", "kind"),
    [("GET", "reads"), ("head", "reads"), ("PUT", "writes"), ("PATCH", "writes"),
     ("POST", "writes"), ("DELETE", "deletes")],
)  # fmt: skip
def test_kind_of(method: str, kind: str) -> None:
    assert kind_of(method) == kind


@pytest.mark.parametrize(
    ("url", "subscription"),
    [
        (f"https://management.azure.com/subscriptions/{SUB.upper()}/resourcegroups/x", SUB),
        (f"https://m.local/subscriptions/{SUB}/providers/Microsoft.Compute/operations", SUB),
        ("https://management.azure.com/subscriptions?api-version=2022-12-01", None),
        ("https://management.azure.com/providers/Microsoft.ResourceGraph/resources", None),
        ("https://kv.vault.azure.net/keys/k/create", None),
    ],
)
def test_subscription_of(url: str, subscription: str | None) -> None:
    assert subscription_of(url) == subscription


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), (None, 1.0), ("soon", 1.0)])
def test_retry_after_seconds(value: str | None, seconds: float) -> None:
    assert retry_after_seconds(value) == seconds


class Next:
    """The rest of the pipeline: answers with the given status and headers."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers, self.sent = status, headers, 0

    def send(self, request: Any) -> Any:
        self.sent += 1
        return SimpleNamespace(
            http_request=request.http_request,
            http_response=SimpleNamespace(status_code=self.status, headers=self.headers),
        )


def send(policy: RateLimitPolicy, method: str, url: str, answer: Next) -> None:
    policy.next = answer  # type: ignore[assignment]
    policy.send(SimpleNamespace(http_request=SimpleNamespace(method=method, url=url)))  # type: ignore[arg-type]


def test_policy_waits_its_turn_and_learns_from_the_answer() -> None:
    clock, slept = ManualClock(1000.0), []
    buckets = limiter(clock, Rate(2, 10))
    policy = RateLimitPolicy("app", buckets, sleep=slept.append)
    url = f"https://m.local/subscriptions/{SUB}/resourcegroups/rg?api-version=1"
    ok = Next(200, {"x-ms-ratelimit-remaining-subscription-writes": "0"})
    send(policy, "PUT", url, ok)
    assert buckets.tokens(WRITES) == 0  # ARM says 0 left where we thought 1
    send(policy, "PUT", url, ok)
    assert slept == [pytest.approx(0.1)]
    send(policy, "PUT", url, Next(429, {"Retry-After": "2"}))
    assert buckets.reserve(WRITES) == pytest.approx(2.1)
    buckets.settle(WRITES)
    send(policy, "GET", "https://kv.vault.azure.net/keys/k", ok)  # no subscription: unpaced
    assert ok.sent == 3 and len(slept) == 2


def test_policy_settles_a_request_whose_answer_is_lost() -> None:
    buckets = limiter(ManualClock(1000.0))

    class Lost:
        def send(self, request: Any) -> Any:
            raise ConnectionResetError("lost")

    policy = RateLimitPolicy("app", buckets)
    policy.next = Lost()  # type: ignore[assignment]
    request = SimpleNamespace(
        http_request=SimpleNamespace(method="POST", url=f"https://m/subscriptions/{SUB}/x")
    )
    with pytest.raises(ConnectionResetError):
        policy.send(request)  # type: ignore[arg-type]
    assert buckets._buckets[WRITES].outstanding == 0
