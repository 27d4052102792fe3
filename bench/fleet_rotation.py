"""Fleet key rotation at ARM's throttle limit: the emulator seeded with disk encryption sets
and registries over many subscriptions (throttling off while seeding), then, with throttling on
at ARM's documented rates, `rotate-customer-keys` run in its own process against a Prefect
server in another, on threads and on a local Dask cluster, with the server on SQLite and on
PostgreSQL (`./dev postgres`).

    .venv/bin/python bench/fleet_rotation.py [--sets 1000] [--subscriptions 10]
        [--runner threads,dask] [--database sqlite,postgres] [--max-concurrency N]
        [--rewrap-seconds S]

Prints per run: wall time of the flow; the floor ARM's buckets allow for the requests the run
made (per bucket: what exceeds its burst, at its refill rate; the slowest bucket decides; with
`--rewrap-seconds`, the sets' re-wrap added to the writes' floor) and the ratio; the 429s ARM
answered; failed rows (every grant is in place: any is a defect); duplicates (key versions made
beyond one per key); the peak memory (RSS) of the flow's process tree (with its Dask workers)
and of the Prefect server's; where the run's time went, from its task runs: planning (the run's
start to the first key's rotation), the keys' rotation, the wait for the task runner (a local
Dask cluster starting), the dependents' moves and what follows them; the CPU seconds of the
flow's process tree, of the server's and of the emulator (this process), and of the whole
machine (PostgreSQL's included) over the flow process's life: a run whose machine was busy near
its cores' limit is bounded by CPU, not by ARM."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

BLOCK = "bench-fleet"
# seed_fleet's mix: a tenth of each subscription's resources are sets, a twentieth registries
SETS_AND_REGISTRIES_SHARE = 0.15
# the flow's process logs nothing: the figures are the report (Dask's own INFO lines too)
QUIET = {"PREFECT_LOGGING_LEVEL": "CRITICAL", "DASK_LOGGING__DISTRIBUTED": "warning"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=1000, help="sets and registries to seed")
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--runner", type=choices("threads", "dask"), default="threads,dask")
    parser.add_argument("--database", type=choices("sqlite", "postgres"), default="sqlite,postgres")
    parser.add_argument(
        "--max-concurrency",
        type=moves_at_once,
        help="moves at once, as the flow allows (default: the flow's, by subscription)",
    )
    parser.add_argument(
        "--rewrap-seconds",
        type=float,
        help="seconds a set takes to re-wrap its disks after its key changes (previousKeys "
        "not empty; the emulator's default: 0.2): the floor adds it to the writes' floor",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the flow's process: its request
    args = parser.parse_args()
    if args.child:
        run_flow(json.loads(args.child))
        return
    bench(args)


def choices(*allowed: str) -> Callable[[str], list[str]]:
    """A comma-separated list of `allowed` words, refused before the seeding if not."""

    def parse(text: str) -> list[str]:
        words = text.split(",")
        if not words or any(w not in allowed for w in words):
            raise argparse.ArgumentTypeError(f"{text}: a comma-separated list of {allowed}")
        return words

    return parse


def moves_at_once(text: str) -> int:
    """`--max-concurrency`, refused before the seeding if the flow would refuse it."""
    from byok.rotation import THREADS_MAX

    if not text.isdigit() or not 1 <= int(text) <= THREADS_MAX:
        raise argparse.ArgumentTypeError(f"{text}: a whole number from 1 to {THREADS_MAX}")
    return int(text)


def bench(args: argparse.Namespace) -> None:
    from console.emulator_blocks import emulator_azure_credentials
    from console.fleet_seed import seed_fleet
    from emulator.server import Emulator
    from emulator.throttling import Limits, Throttle

    with Emulator() as emulator:
        assert emulator.state is not None
        subs = [emulator.identity.subscription_id] + [
            emulator.state.add_subscription(name=f"fleet-{i}") for i in range(1, args.subscriptions)
        ]
        # the seed neither paces itself nor waits between polls: the emulator does not throttle
        seeder = emulator_azure_credentials(
            emulator, polling_interval_seconds=0, arm_rate_limit=False
        )
        started = time.perf_counter()
        resources = math.ceil(args.sets / SETS_AND_REGISTRIES_SHARE)
        fleet = seed_fleet(seeder, subscriptions=subs, resources=resources, revoke=False)
        print(
            f"seeded {fleet.resources} resources ({len(fleet.des_ids)} sets, "
            f"{len(fleet.registry_ids)} registries, {len(fleet.key_ids)} keys) in {len(subs)} "
            f"subscriptions in {time.perf_counter() - started:.0f} s, throttling off",
            flush=True,
        )
        rewrap = args.rewrap_seconds or 0.0  # the floor counts it only when asked for
        if args.rewrap_seconds is not None:
            sets = emulator.arm.types["microsoft.compute/diskencryptionsets"].hooks
            sets.rewrap_seconds = rewrap  # type: ignore[attr-defined]
        for database in args.database:
            with PrefectServer(database) as server:
                # a new block per server: a saved one keeps its document id on the first
                server.save_block(emulator_azure_credentials(emulator, polling_interval_seconds=1))
                for runner in args.runner:
                    emulator.throttle = Throttle(Limits())  # ARM's rates, buckets full
                    emulator.requests.clear()
                    request = {
                        "azure_credentials_block": BLOCK,
                        "subscriptions": subs,
                        "rotation_id": f"bench-{database}-{runner}-{int(time.time())}",
                        "task_runner": runner,
                        "dask_workers": 2,
                        "max_concurrency": args.max_concurrency,
                        "poll_seconds": 1,
                        "pickup_timeout_minutes": 10,
                    }
                    outcome, usage = server.run(request)
                    report(emulator, database, runner, outcome, usage, rewrap)
                    emulator.throttle = None


def report(
    emulator: Any,
    database: str,
    runner: str,
    outcome: dict[str, Any],
    usage: RunUsage,
    rewrap: float,
) -> None:
    from byok.ratelimit import RateLimits

    logged = emulator.requests.find()
    throttled = sum(r.status == 429 for r in logged)
    drawn = Counter(r.bucket for r in logged if r.bucket and r.status != 429)
    limits = RateLimits()
    floors = {
        bucket: max(0.0, n - limits.of(bucket.rsplit("/", 1)[1]).size)
        / limits.of(bucket.rsplit("/", 1)[1]).per_second
        for bucket, n in drawn.items()
    }
    # a set pinned to a version re-wraps its disks `rewrap` seconds after its update, which
    # can come no sooner than the writes' bucket allows
    floor = max(
        max((f for b, f in floors.items() if b.endswith("/reads")), default=0.0),
        max((f for b, f in floors.items() if not b.endswith("/reads")), default=0.0) + rewrap,
    )
    writes = sum(n for bucket, n in drawn.items() if not bucket.endswith("/reads"))
    reads = sum(n for bucket, n in drawn.items() if bucket.endswith("/reads"))
    busiest = max(drawn.values(), default=0)
    made = Counter(
        (r.port, r.path.split("/")[2].lower())
        for r in logged
        if r.method == "POST" and re.fullmatch(r"/keys/[^/]+/create", r.path) and r.status < 300
    )
    duplicates = sum(n - 1 for n in made.values())
    wall = outcome["wall"]
    # no bucket past its burst: ARM would take every request at once (no ratio to give)
    ratio = f"ratio {wall / floor:5.2f}" if floor else "within every bucket's burst"
    print(
        f"{database:<8} {runner:<7} wall {wall:7.1f} s  floor {floor:6.1f} s  {ratio}  "
        f"{throttled:5d} x 429  ARM writes {writes} reads {reads} (busiest bucket {busiest})  "
        f"rows {outcome['rows']}  keys rotated {outcome['keys_rotated']} "
        f"({len(made)} new versions, {duplicates} duplicates)  failed {outcome['failed']} "
        f"{outcome['failed_reasons']}  state {outcome['state']}  peak RSS flow "
        f"{usage.flow.peak / 2**20:.0f} MiB, server {usage.server.peak / 2**20:.0f} MiB; "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome["phases"].items()),
        flush=True,
    )
    cores = psutil.cpu_count() or 1
    print(
        f"  CPU: flow {usage.flow.cpu:.1f} s, Prefect server {usage.server.cpu:.1f} s, "
        f"emulator {usage.emulator:.1f} s; the machine busy {usage.machine:.1f} of {cores} x "
        f"{usage.elapsed:.1f} s ({usage.machine / cores / usage.elapsed:.0%}): at least "
        f"{usage.machine / cores:.1f} s of wall on {cores} cores",
        flush=True,
    )


class PrefectServer:
    """`prefect server start` in its own process, on SQLite (a fresh file) or on the local
    PostgreSQL of `./dev postgres`."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.home = tempfile.TemporaryDirectory(prefix="byok-bench-prefect-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": self.home.name,
            "PREFECT_API_URL": self.api,
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": self._database_url(),
        }

    def _database_url(self) -> str:
        if self.database == "sqlite":
            return f"sqlite+aiosqlite:///{self.home.name}/prefect.db"
        lines = subprocess.run(
            [str(ROOT / "dev"), "postgres"], check=True, capture_output=True, text=True
        ).stdout
        return lines.strip().split("=", 1)[1].strip("'")  # export NAME='URL

    def __enter__(self) -> PrefectServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(self.api + "/health", timeout=5).read()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the Prefect server did not start") from None
                time.sleep(1)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.home.cleanup()

    def save_block(self, block: Any) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api}):
            block.save(BLOCK, overwrite=True)

    def run(self, request: dict[str, Any]) -> tuple[dict[str, Any], RunUsage]:
        """The flow in its own process; its outcome, and what the flow's process tree, the
        server's and this process (the emulator) used."""
        machine, emulator = _busy_cpu(), _cpu(psutil.Process())
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(request)],
            env={**self.env, **QUIET}, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        flow, server = Usage(child.pid), Usage(self.process.pid)
        out, _ = child.communicate()
        flow.stop()
        server.stop()
        usage = RunUsage(
            flow, server, _cpu(psutil.Process()) - emulator, _busy_cpu() - machine,
            time.perf_counter() - started,
        )  # fmt: skip
        if child.returncode != 0:
            raise SystemExit(f"the flow's process ended with {child.returncode}")
        return json.loads(out.strip().splitlines()[-1]), usage


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _busy_cpu() -> float:
    """CPU seconds the whole machine has spent not idle (all cores, every process)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class Usage:
    """The largest RSS a process tree reached and the CPU seconds its processes spent (each
    process's as last seen), sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0.0
        self.start = {p.pid: _cpu(p) for p in self._tree()}
        self.last = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @property
    def cpu(self) -> float:
        """CPU seconds the tree spent since this sampling began."""
        return sum(self.last.values()) - sum(self.start.values())

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            tree = self._tree()
            if not tree:
                return
            total = 0
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += process.memory_info().rss
                    self.last[process.pid] = _cpu(process)
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class RunUsage(NamedTuple):
    """What one flow run used: its process tree, the Prefect server's, this process's CPU
    seconds (the emulator's), the whole machine's busy CPU seconds, and the seconds elapsed."""

    flow: Usage
    server: Usage
    emulator: float
    machine: float
    elapsed: float


def run_flow(request: dict[str, Any]) -> None:
    """The flow's process: run it, print its outcome as the last line (JSON)."""
    from byok.rotation import FleetRotationRequest, FleetRotationResult, Status
    from flows.fleet_rotation import rotate_customer_keys

    started = time.perf_counter()
    state = rotate_customer_keys(FleetRotationRequest.model_validate(request), return_state=True)
    wall = time.perf_counter() - started
    result = state.result(raise_on_failure=False)
    if isinstance(result, FleetRotationResult):
        reasons = Counter(_cause(r.reason) for r in result.rows if r.status == Status.FAILED)
        outcome = {
            "rows": len(result.rows),
            "keys_rotated": result.keys_rotated,
            "failed": result.failed,
            "failed_reasons": dict(reasons),
        }
    else:  # a run with failed rows ends Failed: "N of M rows failed: row: reason; …"
        text = str(result)
        counts = re.match(r"(\d+) of (\d+) rows failed", text)
        failed, rows = (int(counts[1]), int(counts[2])) if counts else (-1, 0)
        reasons = Counter(_cause(part) for part in text.split("; "))
        outcome = {"rows": rows, "keys_rotated": -1, "failed": failed,
                   "failed_reasons": dict(reasons)}  # fmt: skip
    phases = _phases(state.state_details.flow_run_id)
    print(json.dumps({**outcome, "wall": wall, "state": state.type.value, "phases": phases}))


def _phases(flow_run_id: Any) -> dict[str, float]:
    """Seconds from the flow run's start to the first key's rotation, the keys' rotation
    (first start to last end) and the moves (likewise), from the run's task runs; a phase
    the run did not reach is left out."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    tasks: list[Any] = []
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        while page := client.read_task_runs(
            flow_run_filter=this_run, limit=200, offset=len(tasks)
        ):  # a page at a time: the API gives at most 200
            tasks += page

    def span(prefix: str) -> tuple[Any, Any] | None:
        runs = [t for t in tasks if t.name.startswith(prefix) and t.start_time and t.end_time]
        if not runs:  # a run that ended before this phase
            return None
        return min(t.start_time for t in runs), max(t.end_time for t in runs)

    phases = {}
    if keys := span("Rotate the keys"):
        phases["planning"] = (keys[0] - run.start_time).total_seconds()
        phases["keys"] = (keys[1] - keys[0]).total_seconds()
    if moves := span("Move share "):
        if keys:  # the task runner not ready yet (a local Dask cluster starting)
            phases["waiting for the runner"] = max(0.0, (moves[0] - keys[1]).total_seconds())
        phases["moves"] = (moves[1] - moves[0]).total_seconds()
        if run.end_time:  # publishing, and a local Dask cluster shutting down
            phases["after the moves"] = (run.end_time - moves[1]).total_seconds()
    return phases


def _cause(reason: str) -> str:
    """The error name a failed row's reason carries (its first CamelCase word ending in
    Error, Forbidden or Refused), else its first words."""
    found = re.search(r"\b([A-Z]\w*(?:Error|Forbidden|Refused|Timeout))\b", reason)
    return found[1] if found else reason[:40]


if __name__ == "__main__":
    main()
