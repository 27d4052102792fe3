"""Fault injection: rules matched by method and path pattern, consumed as they fire."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal[
    "status",
    "latency",
    "reset",
    "reset-after",
    "status-after",
    "lro-failed",
    "lro-slow",
    "delayed-effect",
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]


@dataclass
class Fault:
    """One rule.

    - ``status``: answer `status` (429 with `retry_after`, 500, 503…) instead of serving;
    - ``latency``: wait `seconds` before serving;
    - ``reset``: drop the connection (TCP reset) without an answer;
    - ``reset-after``: serve the request (the write happens), then drop the connection: the
      answer is lost;
    - ``status-after``: serve the request, then answer `status` (a 504 from a gateway after
      the write happened) instead of the real answer;
    - ``lro-failed``: a long-running operation started by a matching request ends Failed;
    - ``lro-slow``: a matching long-running operation takes `polls` polls and `seconds` seconds;
    - ``delayed-effect``: the named `effect` (e.g. ``access-grant``) takes `seconds` to apply.

    `count` is how many times the rule fires (None: until cleared).
    """

    kind: FaultKind
    method: str | None = None
    path: str = ".*"
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    polls: int = 1
    effect: str | None = None
    count: int | None = 1
    code: str | None = None
    message: str | None = None
    id: int = 0
    fired: int = 0
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.kind == "delayed-effect" and not self.effect:
            raise ValueError("a delayed-effect fault needs `effect` (e.g. 'access-grant')")
        self._regex = re.compile(self.path, re.IGNORECASE)

    def matches(self, kind: str, method: str, path: str) -> bool:
        """Whether this rule applies to a request (or an effect name, for delayed effects)."""
        if self.kind != kind or (self.count is not None and self.fired >= self.count):
            return False
        if kind == "delayed-effect":
            return self.effect == path
        return (self.method is None or self.method.upper() == method) and bool(
            self._regex.search(path)
        )

    def to_json(self) -> dict[str, Any]:
        """The rule as JSON (for the admin API)."""
        data = asdict(self)
        data.pop("_regex", None)
        return data


class FaultInjector:
    """The set of active rules; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, fault: Fault) -> Fault:
        """Activate a rule; returns it with its id."""
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        """The active rules."""
        with self._lock:
            return list(self._faults)

    def take(self, kind: str, method: str = "", path: str = "") -> Fault | None:
        """The first matching rule of `kind`, counted as fired; None when none matches."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(kind, method, path):
                    fault.fired += 1
                    return fault
        return None

    def effect_time(self, effect: str) -> float:
        """When an effect started now takes hold (monotonic seconds)."""
        fault = self.take("delayed-effect", path=effect)
        return time.monotonic() + (fault.seconds if fault else 0.0)
