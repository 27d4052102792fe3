"""ARM throttling: token buckets per subscription x principal x kind, the remaining-requests
headers, 429 with Retry-After, and the real SDK riding through an empty bucket."""

from __future__ import annotations

import pytest
import requests

from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.throttling import Limit, Limits, Throttle
from tests.helpers import arm_request

SUB = "5f6a9e1c-0000-4000-8000-00000000b10c"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_empties_then_refills_at_its_rate_up_to_its_size() -> None:
    clock = Clock()
    throttle = Throttle(Limits(reads=Limit(3, 2)), clock)
    drawn = [throttle.take(SUB, "p1", "GET") for _ in range(4)]
    assert [d.remaining for d in drawn[:3]] == [2, 1, 0]
    assert [d.retry_after for d in drawn] == [None, None, None, 1]
    clock.now += 0.5  # 2 tokens/s: one token back
    assert throttle.take(SUB, "p1", "HEAD").retry_after is None
    assert throttle.take(SUB, "p1", "GET").retry_after == 1
    clock.now += 60  # full again, never more than its size
    assert [throttle.take(SUB, "p1", "GET").remaining for _ in range(3)] == [2, 1, 0]


def test_one_bucket_per_subscription_principal_and_kind() -> None:
    throttle = Throttle(Limits(Limit(1, 1), Limit(1, 1), Limit(1, 1)), Clock())
    first = [
        throttle.take(SUB, "p1", "GET"),
        throttle.take(SUB, "p1", "PUT"),
        throttle.take(SUB, "p1", "DELETE"),
        throttle.take(SUB, "p2", "GET"),
        throttle.take("other-sub", "p1", "GET"),
    ]
    assert [d.retry_after for d in first] == [None] * 5
    assert [d.kind for d in first[:3]] == ["reads", "writes", "deletes"]
    assert throttle.take(SUB, "p1", "POST").retry_after == 1  # POST and PUT: writes
    assert throttle.take(SUB.upper(), "p1", "PATCH").retry_after == 1
    assert first[1].bucket == f"{SUB}/p1/writes"


@pytest.mark.parametrize("text", ["0/1", "5/0", "5", "a/b"])
def test_limits_must_be_positive(text: str) -> None:
    with pytest.raises(ValueError, match="SIZE/RATE"):
        Limit.parse(text)


def test_headers_decrement_then_429_with_retry_after(
    emulator: Emulator, azure: AzureClients
) -> None:
    emulator.throttle = Throttle(Limits(reads=Limit(2, 0.5), writes=Limit(5, 1)))
    path = "/resourcegroups/rg-throttle"
    put = arm_request(emulator, azure, "PUT", path, {"location": "westeurope"}, "2025-04-01")
    assert put.headers["x-ms-ratelimit-remaining-subscription-writes"] == "4"
    answers = [
        arm_request(emulator, azure, "GET", path, api_version="2025-04-01") for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ms-ratelimit-remaining-subscription-reads"] for a in answers] == [
        "1",
        "0",
        "0",
    ]
    refused = answers[2]
    assert refused.headers["Retry-After"] == "2"  # 0.5 token/s: a token in 2 s
    assert refused.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    principal = emulator.state.service_principal.object_id  # type: ignore[union-attr]
    logged = emulator.requests.find(path="/resourcegroups/rg-throttle$")
    assert [(e.method, e.status, e.bucket) for e in logged] == [
        ("PUT", 201, f"{SUB}/{principal}/writes"),
        ("GET", 200, f"{SUB}/{principal}/reads"),
        ("GET", 200, f"{SUB}/{principal}/reads"),
        ("GET", 429, f"{SUB}/{principal}/reads"),
    ]


def test_off_by_default_and_only_subscription_paths_draw(
    emulator: Emulator, azure: AzureClients
) -> None:
    answer = arm_request(emulator, azure, "GET", "/resourcegroups")
    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.startswith("x-ms-ratelimit")]
    emulator.throttle = Throttle(Limits(reads=Limit(1, 1)))
    token = azure.credential.get_token("https://management.azure.com/.default").token
    for _ in range(2):  # tenant-level: no subscription bucket
        tenant_level = requests.get(
            f"{emulator.base_url}/subscriptions?api-version=2022-12-01",
            headers={"Authorization": f"Bearer {token}"},
            verify=str(emulator.ca_path),
            timeout=10,
        )
        assert tenant_level.status_code == 200
    assert [e.bucket for e in emulator.requests.find(path="^/subscriptions$")] == ["", ""]


def test_the_sdk_rides_through_an_empty_bucket(emulator: Emulator, azure: AzureClients) -> None:
    groups = azure.resources().resource_groups
    groups.create_or_update("rg-burst", {"location": "westeurope"})
    emulator.throttle = Throttle(Limits(reads=Limit(2, 4)))
    assert [groups.get("rg-burst").name for _ in range(5)] == ["rg-burst"] * 5
    statuses = [e.status for e in emulator.requests.find("GET", "/resourcegroups/rg-burst$")]
    assert statuses.count(429) >= 1 and statuses.count(200) == 5
