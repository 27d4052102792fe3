"""poll_until: a fake clock, no sleeping."""

from __future__ import annotations

import pytest

from byok.polling import PollTimeout, poll_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_wanted_state_after_polling() -> None:
    states = iter(["Registering", "Registering", "Registered"])
    clock = FakeClock()
    result = poll_until(
        lambda: next(states),
        frozenset({"Registered"}),
        timeout_seconds=60,
        interval_seconds=5,
        what="x",
        sleep=clock.sleep,
        clock=clock.time,
    )
    assert result == "Registered"
    assert clock.sleeps == [5, 5]


def test_stop_state_raises_its_exception() -> None:
    clock = FakeClock()
    with pytest.raises(PermissionError, match="Pending"):
        poll_until(
            lambda: "Pending",
            frozenset({"Registered"}),
            stop={"Pending": lambda s: PermissionError(s)},
            timeout_seconds=60,
            interval_seconds=5,
            what="x",
            sleep=clock.sleep,
            clock=clock.time,
        )
    assert clock.sleeps == []


def test_deadline_names_what_and_last_state() -> None:
    clock = FakeClock()
    with pytest.raises(PollTimeout, match=r"Feature F is still 'Registering' after 12 s"):
        poll_until(
            lambda: "Registering",
            frozenset({"Registered"}),
            timeout_seconds=12,
            interval_seconds=5,
            what="Feature F",
            sleep=clock.sleep,
            clock=clock.time,
        )
    assert clock.sleeps == [5, 5, 2]  # never sleeps past the deadline
