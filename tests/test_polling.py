"""poll_until: a fake clock, no sleeping."""

from __future__ import annotations

import pytest

from byok.polling import PollTimeout, poll_read, poll_until, read_settled


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


def settled(reads: list[dict | None], clock: FakeClock, timeout: float = 60) -> dict | None:
    answers = iter(reads)
    return read_settled(
        lambda: next(answers),
        lambda r: r.get("state"),
        timeout_seconds=timeout,
        interval_seconds=5,
        what="Vault v",
        sleep=clock.sleep,
        clock=clock.time,
    )


def test_read_settled_waits_for_a_terminal_state() -> None:
    clock = FakeClock()
    reads = [{"state": "Creating"}, {"state": "Updating"}, {"state": "Failed"}]
    assert settled(reads, clock) == {"state": "Failed"}
    assert clock.sleeps == [5, 5]


def test_read_settled_returns_missing_and_stateless_resources_at_once() -> None:
    clock = FakeClock()
    assert settled([None], clock) is None
    assert settled([{"name": "assignment"}], clock) == {"name": "assignment"}
    assert clock.sleeps == []


def test_read_settled_times_out_naming_the_resource() -> None:
    with pytest.raises(PollTimeout, match=r"Vault v is still 'Creating' after 10 s"):
        settled([{"state": "Creating"}] * 10, FakeClock(), timeout=10)


def test_poll_read_starts_from_the_callers_read_and_returns_the_last_one() -> None:
    reads: list[str] = []

    def read() -> str:
        reads.append(["old", "done"][len(reads)])
        return reads[-1]

    def polled(seen: str) -> str:
        return poll_read(
            read, str, seen=seen, timeout_seconds=5, interval_seconds=0.001, what="The set"
        )

    assert polled("done") == "done" and reads == []  # done already: not read again
    assert polled("stale") == "done" and reads == ["old", "done"]
