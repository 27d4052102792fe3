"""Sharing ARM's write bucket across Dask workers: which way keeps closest to the limit without
429 storms. Each worker process has its own client buckets; the ways measured:

- `per-worker`: every worker paces to the whole limit on its own (the reference: no sharing);
- `split`: every worker paces to 1/N of the limit (no coordination);
- `one-place`: one `Limiter` in a Dask actor, every request reserves its token there;
- `prefect`: a Prefect global concurrency limit with `slot_decay_per_second` (the bucket's
  size and refill), `prefect.concurrency.sync.rate_limit` before every request.

    .venv/bin/python bench/rate_limits.py [--writes 240] [--size 20] [--rate 20]
        [--workers 2] [--threads 8] [--strategies per-worker,split,one-place,prefect]

On a local 2-worker `distributed.LocalCluster` against the emulator with ARM throttling on at
SIZE/RATE for writes, tasks spread over the workers make WRITES resource-group PUTs; prints per
way the wall time, the floor the bucket allows, their ratio and the 429s ARM answered."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from distributed import Client, LocalCluster

from blocks.azure import AzureCredentials
from byok.ratelimit import BucketKey, Limiter, Rate, RateLimits, floor_seconds
from clients.azure import AzureClients
from clients.context import forget
from clients.ratelimit import Buckets, use_buckets
from console.emulator_blocks import emulator_azure_credentials
from emulator.server import Emulator
from emulator.throttling import Limit, Limits, Throttle

STRATEGIES = ("per-worker", "split", "one-place", "prefect")


class SharedLimiter:
    """The one-place buckets: a `Limiter` living in a Dask actor."""

    def __init__(self, limits: RateLimits) -> None:
        self.limiter = Limiter(limits)

    def reserve(self, key: BucketKey) -> float:
        return self.limiter.reserve(key)

    def settle(self, key: BucketKey, remaining: float | None, retry_after: float | None) -> None:
        self.limiter.settle(key, remaining, retry_after)


class ActorBuckets:
    """`Buckets` over the actor: a round trip to reserve, settling without waiting."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def reserve(self, key: BucketKey) -> float:
        return float(self.actor.reserve(key).result())

    def settle(
        self, key: BucketKey, remaining: float | None = None, retry_after: float | None = None
    ) -> None:
        self.actor.settle(key, remaining, retry_after)


class PrefectBuckets:
    """`Buckets` over Prefect global concurrency limits with slot decay, one per bucket."""

    def reserve(self, key: BucketKey) -> float:
        from prefect.concurrency.sync import rate_limit

        rate_limit(prefect_limit_name(key), strict=True)
        return 0.0

    def settle(
        self, key: BucketKey, remaining: float | None = None, retry_after: float | None = None
    ) -> None:
        """Prefect's limit learns nothing from ARM's answers."""


def prefect_limit_name(key: BucketKey) -> str:
    return "arm-" + "-".join(key)


@dataclass(frozen=True)
class Way:
    """How a worker makes its buckets."""

    strategy: str
    limits: RateLimits
    workers: int
    actor: Any = None

    def buckets(self) -> Buckets:
        if self.strategy == "split":
            return Limiter(self.limits.share(self.workers))
        if self.strategy == "one-place":
            return ActorBuckets(self.actor)
        if self.strategy == "prefect":
            return PrefectBuckets()
        return Limiter(self.limits)


_configured: list[str] = []
_lock = threading.Lock()


def write_batch(way: Way, block: AzureCredentials, batch: int, writes: int) -> int:
    """A task: `writes` resource-group PUTs through the process's shared client context."""
    with _lock:
        if _configured != [way.strategy]:
            use_buckets(way.buckets)
            forget()
            _configured[:] = [way.strategy]
    groups = AzureClients.of(block).resources().resource_groups
    for i in range(writes):
        groups.create_or_update(f"rg-{way.strategy}-{batch}-{i}", {"location": "westeurope"})
    return writes


def run(client: Client, emulator: Emulator, way: Way, block: AzureCredentials, args: Any) -> None:
    per_task = 5
    tasks = args.writes // per_task
    emulator.throttle = Throttle(Limits(writes=Limit(args.size, args.rate)))
    emulator.requests.clear()
    # warm up every worker (token, clients) with reads, outside the timed part
    client.run(lambda: AzureClients.of(block).credential.get_token(block.endpoints().arm_scope))
    started = time.perf_counter()
    futures = client.map(
        write_batch, [way] * tasks, [block] * tasks, range(tasks), [per_task] * tasks, pure=False
    )
    done = sum(client.gather(futures))
    wall = time.perf_counter() - started
    puts = emulator.requests.find("PUT", "/resourcegroups/rg-")
    throttled = sum(e.status == 429 for e in puts)
    floor = floor_seconds({"writes": done}, way.limits)
    print(
        f"{way.strategy:<11} {done:5d} writes  {wall:7.2f} s  floor {floor:6.2f} s  "
        f"ratio {wall / floor:5.2f}  {throttled:4d} x 429",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=240)
    parser.add_argument("--size", type=float, default=20)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    limits = RateLimits(writes=Rate(args.size, args.rate))
    with Emulator() as emulator:
        block = emulator_azure_credentials(emulator, polling_interval_seconds=0.02)
        principal = str(block.client_id)
        subscription = emulator.identity.subscription_id.lower()
        if "prefect" in strategies:
            _prefect_limits(args, (subscription, principal, "writes"))
        with (
            LocalCluster(
                n_workers=args.workers, threads_per_worker=args.threads, processes=True
            ) as cluster,
            Client(cluster) as client,
        ):
            print(
                f"{args.workers} workers x {args.threads} threads; ARM writes {args.size:g} "
                f"burst, {args.rate:g}/s",
                flush=True,
            )
            for strategy in strategies:
                actor = None
                if strategy == "one-place":
                    actor = client.submit(SharedLimiter, limits, actor=True).result()
                run(client, emulator, Way(strategy, limits, args.workers, actor), block, args)


def _prefect_limits(args: Any, key: BucketKey) -> None:
    """A Prefect server for the workers, and the bucket's limit with slot decay."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    harness = prefect_test_harness(server_startup_timeout=300)
    harness.__enter__()  # for the life of the process
    os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the workers inherit it
    with get_client(sync_client=True) as prefect:
        prefect.upsert_global_concurrency_limit_by_name(
            prefect_limit_name(key), int(args.size), slot_decay_per_second=args.rate
        )


if __name__ == "__main__":
    # by its module name, so that Dask pickles the tasks and the actor by reference
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rate_limits

    rate_limits.main()
