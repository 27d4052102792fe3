"""Where a fleet run's tasks execute: a thread pool by default, or Dask (an existing
scheduler, or a local cluster of worker processes) through prefect-dask."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import task
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from byok.errors import InvalidRequest
from byok.rotation import FleetRotationRequest

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


def task_runner_for(request: FleetRotationRequest, concurrency: int) -> Any:
    """The task runner the request asks for, for `concurrency` moves at once."""
    if request.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=concurrency)
    from prefect_dask import DaskTaskRunner  # only fleets that use Dask need it

    if request.dask_address:
        return DaskTaskRunner(address=request.dask_address)
    # Dask's default is one thread per core: a move mostly waits on ARM (its polls and the
    # pacing), so the workers share `concurrency` threads as the thread runner has them
    threads = -(-concurrency // request.dask_workers)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": request.dask_workers,
            "threads_per_worker": threads,
            "processes": True,
            # each worker imports the moves' code as it starts (while the flow rotates the
            # keys), not when its share arrives
            "preload": ["tasks.fleet_rotation"],
            "config": {PROFILER: False},  # dotted: the workers set it over their config
        }
    )


@contextmanager
def tasks_run_on(runner: TaskRunner[Any]) -> Iterator[None]:
    """Tasks submitted inside run on `runner`, as tasks of the current flow run.

    A copy of the run's context with another runner is how Prefect's own engine gives a run
    its runner. The fan-out stays in the flow whose parameters are the request: prefect-dask
    sends the flow run's context, parameters included, with every task (a subflow holding
    the plan cost 255 ms and megabytes per task, measured at 300 sets)."""
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("tasks_run_on() is for a flow run")
    with runner, context.model_copy(update={"task_runner": runner}):
        yield


@contextmanager
def fleet_runner(request: FleetRotationRequest, concurrency: int) -> Iterator[tuple[int, int]]:
    """Tasks submitted inside run on the request's runner; gives how many shares of the
    fleet to send and how many threads each share runs: one share of `concurrency` threads
    on the thread runner, one per Dask worker sharing `concurrency` threads.

    A share, not each dependent, is what goes to Dask: each task sent cost the flow ~0.4 s
    (Prefect's settings serialised, the payload tokenised) and the worker two new Prefect
    clients (py-spy, 300 sets); a share's moves run on its worker's threads and client."""
    runner = task_runner_for(request, concurrency)
    with tasks_run_on(runner):
        if isinstance(runner, ThreadPoolTaskRunner):
            yield 1, concurrency
        else:
            workers = len(runner.client.nthreads())
            yield workers, -(-concurrency // workers)


@task(name="Check the task runner")
def check_task_runner(request: FleetRotationRequest) -> None:
    """Before any write: prefect-dask is installed, the Dask scheduler answers and none of
    its workers can freeze as above."""
    if request.task_runner != "dask":
        return
    try:
        from distributed import Client
    except ImportError:
        raise InvalidRequest(
            "task_runner", "dask", "needs prefect-dask (pip install prefect-dask)"
        ) from None
    if request.dask_address is None:
        return
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
