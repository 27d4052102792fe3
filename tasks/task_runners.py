"""Where a fleet run's tasks execute: a thread pool by default, or Dask (an existing
scheduler, or a local cluster of worker processes) through prefect-dask."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import task
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from byok.errors import InvalidRequest
from byok.rotation import FleetRotationRequest

CONNECT_SECONDS = 3


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
        }
    )


@contextmanager
def tasks_run_on(request: FleetRotationRequest) -> Iterator[int]:
    """Tasks submitted inside run on the request's runner, as tasks of this flow run; gives
    how many run at once (`max_concurrency`, or fewer when a Dask cluster has fewer threads).

    prefect-dask sends the flow run's context, its parameters included, with every task: a
    subflow holding the plan cost 255 ms and megabytes per task (measured at 300 sets), so
    the fan-out stays in the flow whose parameters are the request. A copy of the context
    with another runner is how Prefect's own engine gives a run its runner."""
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("tasks_run_on() is for a flow run")
    with task_runner_for(request) as runner, context.model_copy(update={"task_runner": runner}):
        if isinstance(runner, ThreadPoolTaskRunner):
            yield request.max_concurrency
        else:
            yield min(request.max_concurrency, sum(runner.client.nthreads().values()))


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
