"""A log of every request the emulator served, for tests and for `byok emulator`."""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LoggedRequest:
    """One served request."""

    time: float
    method: str
    path: str
    query: str
    status: int  # 0: the connection was dropped
    port: int
    origin: str = "main"  # "main", "vault" or "cos"
    bucket: str = ""  # the ARM throttling bucket drawn from ('' when none)

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON."""
        return asdict(self)


class RequestLog:
    """Thread-safe, bounded list of served requests."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []
        self._limit = limit

    def append(self, entry: LoggedRequest) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)
            if len(self._entries) > self._limit:
                del self._entries[: self._limit // 10]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()

    def find(
        self, method: str | None = None, path: str | None = None, origin: str | None = None
    ) -> list[LoggedRequest]:
        """Requests with this method and origin (any if None) whose path matches the regex
        `path`."""
        regex = re.compile(path, re.IGNORECASE) if path else None
        with self._lock:
            entries = list(self._entries)
        return [
            e
            for e in entries
            if (method is None or e.method == method.upper())
            and (origin is None or e.origin == origin)
            and (regex is None or regex.search(e.path))
        ]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
