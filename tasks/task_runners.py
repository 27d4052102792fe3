"""Where a fleet run's tasks execute: a thread pool by default, or Dask (an existing
scheduler, or a local cluster of worker processes) through prefect-dask."""

from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.forkserver
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from byok.errors import InvalidRequest
from byok.rotation import AUTO_THREADS_MAX, FleetRotationRequest

CONNECT_SECONDS = 3
# Dask's worker profiler reads every thread's stack (sys._current_frames) every 10 ms. On
# Python 3.11 before 3.11.9 that call can deadlock with a thread starting or ending (CPython
# gh-106883, fixed in 3.11.9 by python/cpython#117332), and the moves start threads all the
# time (azure-core starts one per long-running operation). It froze a worker in
# `bench/fleet_rotation.py`, whose runs then took 10 minutes instead of 20 s (py-spy: the
# worker's main thread in `trigger_profile`, a move's thread in `start_new_thread` holding
# the GIL). distributed switches its event-loop profiler off on 3.11 for this reason
# (distributed/core.py), but not the worker's.
PROFILER = "distributed.worker.profile.enabled"
FIXED_IN = (3, 11, 9)
# A local cluster's workers fork from one server process that imported Dask and the moves'
# code once (multiprocessing's forkserver, Linux and macOS; nothing they import starts a
# thread, so the fork is safe), instead of each spawning a new Python that imports them. On
# 2 cores, beside the planning (bench/fleet_rotation.py, 2 workers): ready 4.2 s after the
# start began when spawned, 2.1 s forked; closed in 1.2 s (each spawned Python's exit) and
# 0.12 s. The server lives as long as the flow's process (a later run forks from it too).
FORKSERVER = {"distributed.worker.multiprocessing-method": "forkserver"}
MOVES_CODE = "tasks.fleet_rotation"


def dask_runner_for(request: FleetRotationRequest) -> Any:
    """The Dask task runner the request asks for: its scheduler, or a local cluster."""
    from prefect_dask import DaskTaskRunner  # only fleets that use Dask need it

    if request.dask_address:
        return DaskTaskRunner(address=request.dask_address)
    # Dask's default is one thread per core: a move mostly waits on ARM (its polls and the
    # pacing), so the workers share as many threads as the thread runner may have (the
    # cluster starts before the plan says how many the run takes; Dask starts a thread when
    # a task needs one)
    threads = -(-(request.max_concurrency or AUTO_THREADS_MAX) // request.dask_workers)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": request.dask_workers,
            "threads_per_worker": threads,
            "processes": True,
            # each worker imports the moves' code as it starts (while the flow plans and
            # rotates the keys), not when its share arrives
            "preload": [MOVES_CODE],
            "config": {PROFILER: False},  # dotted: the workers set it over their config
        }
    )


class FleetRunner:
    """Where a fleet run's moves go: a thread pool, or Dask, whose local cluster (or the
    connection to a scheduler) starts in a thread of its own when the run begins.

    A local cluster's workers take 2-4 s to start (they import the moves' code): they start
    beside the planning and the keys' rotation instead of after them, and close beside the
    publishing. The start and the close run on the same thread: the Dask client is the
    current one of the thread that entered it (a context variable)."""

    def __init__(self, request: FleetRotationRequest) -> None:
        self.request = request
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="byok-dask")
        self._dask: Future[Any] | None = None
        self._closed: Future[None] | None = None

    def __enter__(self) -> FleetRunner:
        if self.request.task_runner == "dask" and not self.request.plan_only:
            self._dask = self._thread.submit(_started, self.request)
        return self

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        self._close()
        try:
            if self._closed is not None:
                self._closed.result()
        except Exception as exc:
            if error is None:
                raise
            # the run's own error is the one to report; the close's is a warning beside it
            get_run_logger().warning("The Dask cluster did not close cleanly: %s", exc)
        finally:
            self._thread.shutdown()

    @contextmanager
    def tasks(self, concurrency: int) -> Iterator[tuple[int, int]]:
        """Tasks submitted inside run on the request's runner; gives how many shares of the
        fleet to send and how many threads each share runs: one share of `concurrency`
        threads on the thread runner, one per Dask worker sharing `concurrency` threads.

        A share, not each dependent, is what goes to Dask: each task sent cost the flow
        ~0.4 s (Prefect's settings serialised, the payload tokenised) and the worker two new
        Prefect clients (py-spy, 300 sets); a share's moves run on its worker's threads and
        client. A Dask runner closes as the block ends, while the run goes on."""
        if self._dask is None:
            pool: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=concurrency)
            with pool, tasks_run_on(pool):
                yield 1, concurrency
            return
        runner = self._dask.result()
        workers = len(runner.client.nthreads())
        try:
            with tasks_run_on(runner):
                yield workers, -(-concurrency // workers)
        finally:
            self._close()

    def _close(self) -> None:
        if self._dask is not None and self._closed is None:
            self._closed = self._thread.submit(_closed, self._dask)


def _started(request: FleetRotationRequest) -> Any:
    """The request's Dask runner entered and its client made (a local cluster started);
    prefect-dask and Dask imported here too (~1 s), beside the planning."""
    if not request.dask_address:
        # the server imports Dask and the moves' code while Dask is imported here and its
        # scheduler starts (Dask's own list, set as it first uses the server, comes too late)
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            ["distributed", MOVES_CODE]
        )
        multiprocessing.forkserver.ensure_running()
    import dask.config

    runner = dask_runner_for(request)
    runner.__enter__()
    try:
        with dask.config.set(FORKSERVER):
            runner.client  # noqa: B018  (prefect-dask starts the cluster on first use)
    except BaseException:
        runner.__exit__(None, None, None)
        raise
    return runner


def _closed(starting: Future[Any]) -> None:
    """The runner `starting` gave closed, if it started."""
    if starting.exception() is None:
        starting.result().__exit__(None, None, None)


@contextmanager
def tasks_run_on(runner: TaskRunner[Any]) -> Iterator[None]:
    """Tasks submitted inside run on the started `runner`, as tasks of the current flow run.

    A copy of the run's context with another runner is how Prefect's own engine gives a run
    its runner. The fan-out stays in the flow whose parameters are the request: prefect-dask
    sends the flow run's context, parameters included, with every task (a subflow holding
    the plan cost 255 ms and megabytes per task, measured at 300 sets)."""
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("tasks_run_on() is for a flow run")
    with context.model_copy(update={"task_runner": runner}):
        yield


@task(name="Check the task runner")
def check_task_runner(request: FleetRotationRequest) -> None:
    """Before any write: prefect-dask is installed, the Dask scheduler answers and none of
    its workers can freeze as above."""
    if request.task_runner != "dask":
        return
    if importlib.util.find_spec("prefect_dask") is None:  # not imported: it takes ~1 s
        raise InvalidRequest("task_runner", "dask", "needs prefect-dask (pip install prefect-dask)")
    if request.dask_address is None:
        return
    from distributed import Client

    try:
        client = Client(request.dask_address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise InvalidRequest(
            "dask_address",
            request.dask_address,
            f"no Dask scheduler answered within {CONNECT_SECONDS} s ({type(exc).__name__})",
        ) from None
    with client:
        frozen = _workers_that_can_freeze(client)
    if frozen:
        raise InvalidRequest(
            "dask_address",
            request.dask_address,
            f"{len(frozen)} worker(s) run Python {frozen[0]} with Dask's profiler on, which can "
            "freeze a worker (CPython gh-106883, fixed in 3.11.9): start the workers "
            f"with {PROFILER} false (DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False) or on "
            "Python 3.11.9 or later",
        )


def _workers_that_can_freeze(client: Any) -> list[str]:
    """The Python versions of the workers that profile on a Python with gh-106883, read
    with Dask's own calls (a worker without this project installed answers them too)."""
    import dask.config

    profiling = client.run(dask.config.get, PROFILER)
    frozen = []
    for worker, facts in client.get_versions()["workers"].items():
        release = tuple(int(n) for n in re.findall(r"\d+", facts["host"]["python"])[:3])
        if profiling.get(worker) and release[:2] == FIXED_IN[:2] and release < FIXED_IN:
            frozen.append(".".join(map(str, release)))  # 3.11.7.final.0 → 3.11.7
    return frozen
