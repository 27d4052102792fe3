"""A crash matrix for any flow run against the emulator: take the writes a clean run makes,
then for each write and each way of failing around it, start from a fresh state, inject the
failure, run, re-run once if the run failed, and compare the emulator's state with the clean
run's. A count above the clean run's is a duplicate.

    clean = crash.clean_run(emulator, fresh, run)
    outcomes = crash.matrix(emulator, fresh, run, clean, crash.FAILURES)
    assert crash.summary(outcomes) == {..., "duplicates": 0, "not completed": 0}
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from emulator.faults import Fault
from emulator.server import Emulator

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_WRITES = re.compile(r"/oauth2/|/token$", re.IGNORECASE)  # token requests write nothing
# Names a run makes up (role assignment GUIDs) differ from run to run: matched as any GUID.
GUID = re.compile(r"[0-9a-f]{8}\\-[0-9a-f]{4}\\-[0-9a-f]{4}\\-[0-9a-f]{4}\\-[0-9a-f]{12}", re.I)


@dataclass(frozen=True)
class Write:
    """One write request, by method and exact path."""

    method: str
    path: str

    @property
    def pattern(self) -> str:
        """A fault path pattern matching this path (any GUID where it has one)."""
        return "^" + GUID.sub("[0-9a-f-]{36}", re.escape(self.path)) + "$"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def fault(kind: str, **options: object) -> Callable[[Write], Fault]:
    """A failure around a write: a `Fault` of `kind` on that write's method and path."""
    return lambda w: Fault(kind, method=w.method, path=w.pattern, **options)  # type: ignore[arg-type]


# The ways to fail around a write: the answer lost once (the write happened), a gateway 504
# after the write, the answer lost on every try (the run fails; the re-run must complete).
FAILURES: dict[str, Callable[[Write], Fault]] = {
    "lost-once": fault("reset-after"),
    "504-after": fault("status-after", status=504),
    "lost-always": fault("reset-after", count=None),
}


def writes(emulator: Emulator) -> list[Write]:
    """The distinct writes (by method and pattern) the emulator served (status < 400) since
    its log was cleared, in order; token requests left out."""
    seen: dict[tuple[str, str], Write] = {}
    for r in emulator.requests.find():
        if r.method in WRITE_METHODS and 0 < r.status < 400 and not NOT_WRITES.search(r.path):
            write = Write(r.method, r.path)
            seen.setdefault((write.method, write.pattern), write)
    return list(seen.values())


def state_counts(emulator: Emulator) -> Counter[str]:
    """What a duplicate would show in: ARM resources per type, key versions per key."""
    assert emulator.state is not None
    counts: Counter[str] = Counter(r["type"].lower() for r in emulator.arm.resources.values())
    for data in emulator.state.keyvault.vaults.values():
        for name, key in data.keys.items():
            counts[f"key versions of {name}"] += len(key.versions)
    return counts


@dataclass
class Clean:
    """What a clean run wrote and left."""

    writes: list[Write]
    counts: Counter[str]


@dataclass
class Outcome:
    """One scenario: the write failed around, how, and what came of it."""

    write: Write
    failure: str
    first_run: str  # "completed" or the error's first line
    fired: bool = True  # whether the fault met its write at all
    reruns: int = 0
    completed: bool = True
    duplicates: dict[str, int] = field(default_factory=dict)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def clean_run(
    emulator: Emulator,
    fresh: Callable[[], None],
    run: Callable[[], object],
    counts: Callable[[Emulator], Counter[str]] = state_counts,
) -> Clean:
    """Run once from a fresh state with no fault; record its writes and the state left."""
    fresh()
    emulator.requests.clear()
    run()
    return Clean(writes(emulator), counts(emulator))


def scenario(
    emulator: Emulator,
    fresh: Callable[[], None],
    run: Callable[[], object],
    clean: Clean,
    write: Write,
    failure: str,
    make_fault: Callable[[Write], Fault],
    counts: Callable[[Emulator], Counter[str]] = state_counts,
) -> Outcome:
    """Fresh state, the fault, one run; one re-run without fault if it failed; then compare
    the state with the clean run's."""
    fresh()
    injected = emulator.faults.add(make_fault(write))
    outcome = Outcome(write, failure, "completed")
    try:
        run()
    except Exception as exc:
        outcome.first_run = _first_line(exc)
        emulator.faults.clear()
        outcome.reruns = 1
        try:
            run()
        except Exception as again:
            outcome.completed = False
            outcome.first_run += f" / re-run: {_first_line(again)}"
    outcome.fired = injected.fired > 0
    emulator.faults.clear()
    after = counts(emulator)
    outcome.duplicates = {k: n - clean.counts[k] for k, n in after.items() if n > clean.counts[k]}
    return outcome


def matrix(
    emulator: Emulator,
    fresh: Callable[[], None],
    run: Callable[[], object],
    clean: Clean,
    failures: Mapping[str, Callable[[Write], Fault]],
    only: Iterable[Write] | None = None,
    counts: Callable[[Emulator], Counter[str]] = state_counts,
) -> list[Outcome]:
    """Every write of the clean run (or `only` these), under every failure."""
    return [
        scenario(emulator, fresh, run, clean, write, name, make, counts)
        for write in (clean.writes if only is None else only)
        for name, make in failures.items()
    ]


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """The counts to report: scenarios, duplicates, runs needing a re-run, not completed."""
    return {
        "scenarios": len(outcomes),
        "faults that never fired": sum(not o.fired for o in outcomes),
        "duplicates": sum(bool(o.duplicates) for o in outcomes),
        "needed a re-run": sum(o.reruns for o in outcomes),
        "not completed": sum(not o.completed for o in outcomes),
    }


def report(outcomes: list[Outcome]) -> str:
    """One line per scenario, for assertion messages and logs."""
    return "\n".join(
        f"{o.write} with {o.failure}: {o.first_run}"
        f"{' (re-run)' if o.reruns else ''}{f' DUPLICATES {o.duplicates}' if o.duplicates else ''}"
        for o in outcomes
    )
