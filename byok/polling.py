"""Polling a state to a deadline (no Prefect import: tasks wrap it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


class PollTimeout(TimeoutError):
    """The state did not reach a wanted value before the deadline."""


def timed_out(what: str, state: str, wanted: frozenset[str], seconds: float) -> PollTimeout:
    """The PollTimeout of `what` still in `state` after `seconds`."""
    return PollTimeout(
        f"{what} is still {state!r} after {seconds:g} s (waiting for {' or '.join(sorted(wanted))})"
    )


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
            raise timed_out(what, state, wanted, timeout_seconds)
        sleep(min(interval_seconds, max(0.0, deadline - clock())))


def poll_read(
    read: Callable[[], T],
    state_of: Callable[[T], str],
    *,
    seen: T | None = None,
    wanted: frozenset[str] = frozenset({"done"}),
    timeout_seconds: float,
    interval_seconds: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`read()` until the state of what it returns is in `wanted`, starting from `seen` (a
    read the caller has already: none is made when it is there); the last read. PollTimeout
    past `timeout_seconds`."""
    given = [] if seen is None else [seen]
    last: list[T] = []

    def state() -> str:
        last[:] = [given.pop() if given else read()]
        return state_of(last[0])

    poll_until(
        state,
        wanted,
        timeout_seconds=timeout_seconds,
        interval_seconds=interval_seconds,
        what=what,
        sleep=sleep,
        clock=clock,
    )
    return last[0]


# Provisioning states after which a resource no longer changes by itself.
# https://learn.microsoft.com/azure/azure-resource-manager/management/async-operations#provisioningstate-values
TERMINAL_STATES = frozenset({"Succeeded", "Failed", "Canceled"})


def read_settled(
    read: Callable[[], T | None],
    state_of: Callable[[T], str | None],
    *,
    timeout_seconds: float,
    interval_seconds: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T | None:
    """`read()` once the resource it returns is in a terminal provisioning state (or has
    none); None when it does not exist. PollTimeout past `timeout_seconds`."""

    def state(found: T | None) -> str:
        current = state_of(found) if found is not None else None
        return "Succeeded" if current is None else current

    return poll_read(
        read,
        state,
        wanted=TERMINAL_STATES,
        timeout_seconds=timeout_seconds,
        interval_seconds=interval_seconds,
        what=what,
        sleep=sleep,
        clock=clock,
    )
