"""Polling a state to a deadline (no Prefect import: tasks wrap it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


class PollTimeout(TimeoutError):
    """The state did not reach a wanted value before the deadline."""


def poll_until(
    read_state: Callable[[], str],
    wanted: frozenset[str],
    *,
    stop: Mapping[str, Callable[[str], Exception]] | None = None,
    timeout_seconds: float,
    interval_seconds: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Call `read_state` until it returns a state in `wanted`, and return it.

    A state in `stop` raises the exception its factory makes; running past
    `timeout_seconds` raises PollTimeout naming `what` and the last state seen.
    """
    deadline = clock() + timeout_seconds
    while True:
        state = read_state()
        if state in wanted:
            return state
        if stop and state in stop:
            raise stop[state](state)
        if clock() >= deadline:
            raise PollTimeout(
                f"{what} is still {state!r} after {timeout_seconds:g} s "
                f"(waiting for {' or '.join(sorted(wanted))})"
            )
        sleep(min(interval_seconds, max(0.0, deadline - clock())))
