"""Every step says what it did (created, updated, unchanged, adopted, …) in one log line and
in its flow run's summary; a flow ends with that summary as a table artifact, or, run with
`plan_only`, with its plan (what each step would do, nothing written)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run, task_run

from byok.outcomes import Change, Plan, StepOutcome
from tasks.artifacts import artifact_key

_LOCK = threading.Lock()
_OUTCOMES: OrderedDict[str, list[StepOutcome]] = OrderedDict()
"""Each flow run's outcomes so far (this process's steps), until the run summarizes them."""
KEPT_RUNS = 256
"""Runs whose outcomes are kept at most: a flow that never summarizes (the fleet rotation
keeps its own rows) or a worker process's runs cannot grow memory without bound."""


def report(
    resource: str,
    verb: str | None,
    *,
    step: str | None = None,
    changes: Iterable[Change] = (),
    note: str = "",
    planned: bool = False,
) -> StepOutcome:
    """Log and keep what the running step did to `resource` (`verb` None: nothing, it was
    as wanted). `step` defaults to the running task's name."""
    outcome = StepOutcome(
        step=step or str(task_run.task_name or "flow"),
        resource=resource,
        verb=verb,
        planned=planned,
        changes=list(changes),
        note=note,
    )
    return kept(outcome)


def planned(
    step: Any, resource: str, verb: str | None, note: str = "", changes: Iterable[Change] = ()
) -> StepOutcome:
    """One row of a plan: what the step `step` (a task, or its name) would do to
    `resource`."""
    name = step if isinstance(step, str) else step.name
    return report(resource, verb, step=name, changes=changes, note=note, planned=True)


def kept(outcome: StepOutcome) -> StepOutcome:
    """Log `outcome` and add it to this flow run's summary."""
    get_run_logger().info("%s: %s %s", outcome.step, outcome.resource, outcome.said())
    with _LOCK:
        _OUTCOMES.setdefault(str(flow_run.id), []).append(outcome)
        while len(_OUTCOMES) > KEPT_RUNS:
            _OUTCOMES.popitem(last=False)
    return outcome


def _published(flow: str, kind: str, description: str) -> list[StepOutcome]:
    """This flow run's outcomes, taken out of memory, as the `<flow>-<kind>` table artifact."""
    with _LOCK:
        outcomes = _OUTCOMES.pop(str(flow_run.id), [])
    create_table_artifact(
        key=artifact_key(flow, kind),
        table=[o.row() for o in outcomes],
        description=description.format(flow=flow, run=flow_run.name, steps=len(outcomes)),
    )
    return outcomes


@task(name="Summarize the run")
def summarize(flow: str) -> list[StepOutcome]:
    """This flow run's outcomes as the `<flow>-summary` table artifact."""
    return _published(flow, "summary", "What each step of {flow} did in run {run}.")


@task(name="Publish the plan")
def publish_plan(flow: str) -> Plan:
    """This plan-only run's outcomes (what each step would do) as the `<flow>-plan` table
    artifact and the flow's result."""
    described = "Plan of {flow} (run {run}), {steps} row(s): nothing was written."
    return Plan(flow=flow, steps=_published(flow, "plan", described))
