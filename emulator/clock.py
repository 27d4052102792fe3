"""The emulator's clock: real time plus an offset that tests and the admin API advance, so
that time-based behaviour (rotation policies, automatic key pickup) runs in seconds."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from emulator.http import HttpError, Request, Response


class Clock:
    """Emulator time in epoch seconds; `advance` moves it forward, never back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def now(self) -> float:
        """The emulator's current time (epoch seconds)."""
        with self._lock:
            return time.time() + self._offset

    @property
    def offset(self) -> float:
        """Seconds the emulator runs ahead of real time."""
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by `seconds` (≥ 0); returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"advance_seconds = {seconds}: must be a number ≥ 0")
        with self._lock:
            self._offset += seconds
        return self.now()

    def to_json(self) -> dict[str, Any]:
        """What `GET /_emulator/clock` answers."""
        return {"now": self.now(), "offset_seconds": self.offset}


def clock_admin(clock: Clock, request: Request) -> Response:
    """`GET /_emulator/clock`, and `POST /_emulator/clock {"advance_seconds": N}`."""
    if request.method == "POST":
        clock.advance(float((request.json() or {}).get("advance_seconds", 0)))
    elif request.method != "GET":
        return HttpError(405, "MethodNotAllowed", "The clock takes GET and POST.").response()
    return Response(200, clock.to_json())


def iso(timestamp: float) -> str:
    """An epoch time as ARM writes timestamps (ISO 8601, UTC, `Z`)."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")
