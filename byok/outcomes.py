"""What a step did to a resource (created, updated, unchanged, …) or, in a plan, what it
would do (would create, exists, unchanged, would update (field: old → new)): one row of a
flow's summary or plan."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, Field

DONE = {
    "adopt": "adopted",
    "create": "created",
    "delete": "deleted",
    "deploy": "deployed",
    "download": "downloaded",
    "emit": "emitted",
    "encrypt": "encrypted",
    "export": "exported",
    "find": "found",
    "generate": "generated",
    "grant": "granted",
    "import": "imported",
    "publish": "published",
    "read": "read",
    "recreate": "recreated",
    "register": "registered",
    "revoke": "revoked",
    "rewrap": "rewrapped",
    "rewrite": "re-written",
    "rotate": "rotated",
    "run": "ran",
    "start": "started",
    "stop": "stopped",
    "update": "updated",
    "upload": "uploaded",
    "verify": "verified",
    "wait for": "waited for",
    "wrap": "wrapped",
    "write": "written",
}
"""The verbs a step reports, with the past tense its summary shows."""
READS = frozenset({"adopt", "find", "read", "verify", "wait for"})
"""The verbs that write nothing."""


class Change(BaseModel):
    """One field a step changes (or would change)."""

    field: str
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        return f"{self.field}: {_shown(self.old)} → {_shown(self.new)}"


def _shown(value: Any) -> str:
    return "(none)" if value is None or value == "" else str(value)


class StepOutcome(BaseModel):
    """A step's outcome on one resource. `verb` None: the resource is as wanted already."""

    step: str
    resource: str
    verb: str | None = None
    planned: bool = False
    changes: list[Change] = []
    note: str = ""

    def said(self) -> str:
        """`created`, `unchanged`, `would update (key_url: a → b)`, `exists, unchanged`, …"""
        if self.verb is None:
            text = "exists, unchanged" if self.planned else "unchanged"
        else:
            text = f"would {self.verb}" if self.planned else DONE[self.verb]
        details = [str(c) for c in self.changes] + ([self.note] if self.note else [])
        return f"{text} ({'; '.join(details)})" if details else text

    def row(self) -> dict[str, str]:
        """The row of the flow's summary or plan table."""
        return {"step": self.step, "resource": self.resource, "outcome": self.said()}


def changes(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[Change]:
    """The fields of `wanted` whose value differs from `current`'s, in `wanted`'s order."""
    return [
        Change(field=field, old=current.get(field), new=new)
        for field, new in wanted.items()
        if current.get(field) != new
    ]


def compared(
    step: str, resource: str, current: Mapping[str, Any] | None, wanted: Mapping[str, Any]
) -> StepOutcome:
    """The planned outcome of a get-or-create-or-update step: would create (no `current`),
    would update (the fields that differ) or exists, unchanged."""
    if current is None:
        return StepOutcome(step=step, resource=resource, verb="create", planned=True)
    diff = changes(current, wanted)
    return StepOutcome(
        step=step, resource=resource, verb="update" if diff else None, planned=True, changes=diff
    )


class Plan(BaseModel):
    """A plan-only run's result: validation passed, every read made, nothing written."""

    flow: str
    steps: list[StepOutcome]

    @property
    def writes(self) -> list[StepOutcome]:
        """The steps that would write."""
        return [s for s in self.steps if s.verb is not None and s.verb not in READS]


T = TypeVar("T")


def applied(result: T | Plan) -> T:
    """A flow's result from a run that was not plan-only (a Plan here is the caller's bug)."""
    if isinstance(result, Plan):
        raise TypeError(f"{result.flow} ran with plan_only: it has a plan, not a result")
    return result


PLAN_ONLY: bool = Field(
    False,
    description="Plan only: validate and read, then report what each step would do (would "
    "create / exists, unchanged / would update (field: old → new)) as the `<flow>-plan` "
    "artifact and the run's result; nothing is written.",
)
