"""ARM throttling: token buckets per subscription x principal x kind, the remaining-requests
headers, 429 with Retry-After, and the real SDK riding through an empty bucket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from blocks.azure import AzureCredentials
from byok.ratelimit import Limiter, Rate, RateLimits, floor_seconds
from clients.azure import AzureClients
from clients.ratelimit import dask_share, use_buckets
from emulator.server import Emulator
from emulator.throttling import Limit, Limits, Throttle
from tests.conftest import emulator_credentials
from tests.helpers import ManualClock, arm_request

SUB = "5f6a9e1c-0000-4000-8000-00000000b10c"


def test_a_bucket_empties_then_refills_at_its_rate_up_to_its_size() -> None:
    clock = ManualClock()
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
    throttle = Throttle(Limits(Limit(1, 1), Limit(1, 1), Limit(1, 1)), ManualClock())
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


def test_the_sdk_rides_through_an_empty_bucket(emulator: Emulator) -> None:
    azure = AzureClients(emulator_credentials(emulator, arm_rate_limit=False))
    groups = azure.resources().resource_groups
    groups.create_or_update("rg-burst", {"location": "westeurope"})
    emulator.throttle = Throttle(Limits(reads=Limit(2, 4)))
    assert [groups.get("rg-burst").name for _ in range(5)] == ["rg-burst"] * 5
    statuses = [e.status for e in emulator.requests.find("GET", "/resourcegroups/rg-burst$")]
    assert statuses.count(429) >= 1 and statuses.count(200) == 5


@pytest.fixture
def client_buckets() -> Iterator[None]:
    """The clients' buckets sized like the emulator's in the test below."""
    use_buckets(lambda: Limiter(RateLimits(writes=Rate(10, 20))))
    yield
    use_buckets(None)


@pytest.mark.parametrize("paced", [True, False], ids=["client-buckets", "retries-only"])
def test_threads_sharing_one_context_write_at_the_limit_without_429(
    emulator: Emulator, client_buckets: None, paced: bool
) -> None:
    threads, per_thread = 8, 8
    emulator.throttle = Throttle(Limits(writes=Limit(10, 20)))
    block = emulator_credentials(emulator, arm_rate_limit=paced)

    clients = AzureClients.of(block)
    clients.credential.get_token(clients.endpoints.arm_scope)  # timed: the writes alone
    groups = clients.resources().resource_groups

    def write(thread: int) -> None:
        for i in range(per_thread):
            groups.create_or_update(f"rg-{thread}-{i}", {"location": "westeurope"})

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(threads)))
    wall = time.monotonic() - started
    writes = emulator.requests.find("PUT", "/resourcegroups/rg-")
    made = {e.path.rsplit("/", 1)[1] for e in writes if e.status in (200, 201)}
    assert len(made) == threads * per_thread
    throttled = sum(e.status == 429 for e in writes)
    floor = floor_seconds({"writes": threads * per_thread}, RateLimits(writes=Rate(10, 20)))
    print(f"paced={paced}: {wall:.2f} s for a floor of {floor:.2f} s, {throttled} x 429")
    if paced:
        assert throttled == 0
        assert floor <= wall < 1.3 * floor + 0.5
    else:
        assert throttled >= threads  # the storm the buckets prevent


def test_long_running_operation_polls_draw_from_the_read_bucket(emulator: Emulator) -> None:
    frozen = Limiter(clock=lambda: 0.0)  # no refill: the tokens count the draws
    use_buckets(lambda: frozen)
    try:
        clients = AzureClients(emulator_credentials(emulator))
        groups = clients.resources().resource_groups
        groups.create_or_update("rg-lro", {"location": "westeurope"})
        groups.begin_delete("rg-lro").result()
    finally:
        use_buckets(None)
    sub = emulator.identity.subscription_id.lower()
    logged = emulator.requests.find(path="^/subscriptions/")
    polls = [e for e in logged if e.method == "GET"]
    assert polls, "the deletion was not a long-running operation"
    principal = str(clients.block.client_id)
    drawn = {
        kind: frozen.limits.of(kind).size - frozen.tokens((sub, principal, kind))
        for kind in ("reads", "writes", "deletes")
    }
    assert drawn == {"reads": len(polls), "writes": 1, "deletes": 1}


def write_groups(block: AzureCredentials, batch: int, count: int) -> float:
    """A Dask task: `count` resource-group PUTs through the worker's shared context; returns
    the worker's share of the buckets."""
    groups = AzureClients.of(block).resources().resource_groups
    for i in range(count):
        groups.create_or_update(f"rg-{batch}-{i}", {"location": "westeurope"})
    return dask_share()


@pytest.mark.slow
def test_dask_workers_split_arms_buckets_and_stay_under_the_limit(emulator: Emulator) -> None:
    from distributed import Client, LocalCluster

    assert dask_share() == 1  # not a Dask worker
    emulator.throttle = Throttle(Limits())  # ARM's documented rates: writes 200, 10/s
    block = emulator_credentials(emulator)
    batches, per_batch = 30, 10
    with (
        LocalCluster(n_workers=2, threads_per_worker=8, processes=True) as cluster,
        Client(cluster) as client,
    ):
        # workers warmed up (imports, token) before the clock starts
        client.run(lambda: AzureClients.of(block).credential.get_token(block.endpoints().arm_scope))
        started = time.monotonic()
        futures = client.map(write_groups, [block] * batches, range(batches), [per_batch] * batches)
        shares = client.gather(futures)
        wall = time.monotonic() - started
    writes = emulator.requests.find("PUT", "/resourcegroups/rg-")
    assert len({e.path for e in writes if e.status in (200, 201)}) == batches * per_batch
    throttled = sum(e.status == 429 for e in writes)
    floor = floor_seconds({"writes": batches * per_batch})
    print(f"2 Dask workers: {wall:.2f} s for a floor of {floor:.2f} s, {throttled} x 429")
    assert set(shares) == {2.0}
    assert throttled == 0
    # how close to the floor is bench/rate_limits.py's (1.28 x): on a shared CI machine the
    # Dask workers' own start-up and scheduling weigh more than the pacing
    assert wall >= floor
