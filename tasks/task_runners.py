"""Where a fleet run's tasks execute: a thread pool by default, or Dask (an existing
scheduler, or a local cluster of worker processes) through prefect-dask."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import task
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from byok.errors import InvalidRequest
from byok.rotation import FleetRotationRequest

CONNECT_SECONDS = 3
KEY_THREADS = 16


def key_threads() -> Any:
    """The fleet flow run's own task runner, on which the keys rotate: `KEY_THREADS` at a
    time (Prefect's default thread pool has no bound)."""
    return ThreadPoolTaskRunner(max_workers=KEY_THREADS)


def task_runner_for(request: FleetRotationRequest) -> Any:
    """The task runner the request asks for."""
    if request.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=request.max_concurrency)
    from prefect_dask import DaskTaskRunner  # only fleets that use Dask need it

    if request.dask_address:
        return DaskTaskRunner(address=request.dask_address)
    # Dask's default is one thread per core: a move mostly waits on ARM (its polls and the
    # pacing), so the workers share `max_concurrency` threads as the thread runner has them
    threads = -(-request.max_concurrency // request.dask_workers)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": request.dask_workers,
            "threads_per_worker": threads,
            "processes": True,
            # each worker imports the moves' code as it starts (while the flow rotates the
            # keys), not when its share arrives
            "preload": ["tasks.fleet_rotation"],
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
def fleet_runner(request: FleetRotationRequest) -> Iterator[tuple[int, int]]:
    """Tasks submitted inside run on the request's runner; gives how many shares of the
    fleet to send and how many threads each share runs: one share of `max_concurrency`
    threads on the thread runner, one per Dask worker sharing `max_concurrency` threads.

    A share, not each dependent, is what goes to Dask: each task sent cost the flow ~0.4 s
    (Prefect's settings serialised, the payload tokenised) and the worker two new Prefect
    clients (py-spy, 300 sets); a share's moves run on its worker's threads and client."""
    runner = task_runner_for(request)
    with tasks_run_on(runner):
        if isinstance(runner, ThreadPoolTaskRunner):
            yield 1, request.max_concurrency
        else:
            workers = len(runner.client.nthreads())
            yield workers, -(-request.max_concurrency // workers)


@task(name="Check the task runner")
def check_task_runner(request: FleetRotationRequest) -> None:
    """Before any write: prefect-dask is installed and the Dask scheduler answers."""
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
        Client(request.dask_address, timeout=CONNECT_SECONDS).close()
    except (OSError, TimeoutError) as exc:
        raise InvalidRequest(
            "dask_address",
            request.dask_address,
            f"no Dask scheduler answered within {CONNECT_SECONDS} s ({type(exc).__name__})",
        ) from None
