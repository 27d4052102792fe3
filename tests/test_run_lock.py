"""One run per resource: the second holder waits or fails fast, never both at once."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

from byok.errors import ConcurrentRun
from tasks.run_lock import BUSY_RETRIES, _send, lock_name, resource_lock, resource_locks

RESOURCE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets/d"


def test_lock_names_are_valid_prefect_names_and_case_insensitive() -> None:
    name = lock_name(RESOURCE)
    assert "/" not in name and name.startswith("byok-run-d-")
    assert lock_name(RESOURCE) == lock_name(RESOURCE.upper())


def test_second_holder_fails_fast_then_waits(prefect_harness: None) -> None:
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with resource_lock(RESOURCE, wait=True):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(30)
    busy = pytest.raises(ConcurrentRun, match="another run is working on this resource")
    with busy, resource_lock(RESOURCE, wait=False):
        pytest.fail("two holders at once")
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with resource_lock(RESOURCE, wait=True):
        assert not thread.is_alive() or release.is_set()
    assert time.monotonic() - started >= 0.4
    thread.join(10)


def test_many_resources_are_held_under_one_lease_or_none_when_one_is_taken(
    prefect_harness: None,
) -> None:
    """`resource_locks` holds every slot at once (each refused to a second holder meanwhile,
    all free after); when one is held elsewhere it holds none and says so."""
    others = [f"{RESOURCE}-{n}" for n in range(3)]
    with resource_locks(others) as held:
        assert held
        for other in others:
            with pytest.raises(ConcurrentRun), resource_lock(other, wait=False):
                pytest.fail("two holders at once")
    with resource_lock(others[1], wait=False), resource_locks(others) as held:
        assert not held
        with resource_lock(others[0], wait=False), resource_lock(others[2], wait=False):
            pass  # the others were not taken
    with resource_locks(others) as held:  # all given back
        assert held


def _answer(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://prefect/api/v2/concurrency_limits/increment")
    response = httpx.Response(status, request=request, headers=headers)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


@pytest.mark.parametrize(
    "failure",
    [
        _answer(503),
        _answer(502),
        _answer(408),
        _answer(429, {"Retry-After": "soon"}),  # not a number of seconds: our own short wait
        httpx.RemoteProtocolError("Server disconnected without sending a response"),
    ],
)
def test_a_busy_server_is_asked_again_at_once_without_prefects_own_resends(
    failure: Exception,
) -> None:
    """A SQLite server answers 503 when two slot writes overlap: asked again after waits of
    tens of milliseconds (Prefect's client waits 2, 4, 8 s), its own re-sends off."""
    asked: list[int] = []

    def request() -> str:
        asked.append(PREFECT_CLIENT_MAX_RETRIES.value())
        if len(asked) < 3:
            raise failure
        return "lease"

    started = time.monotonic()
    assert _send(request) == "lease"
    assert time.monotonic() - started < 0.5
    assert asked == [0, 0, 0]
    assert PREFECT_CLIENT_MAX_RETRIES.value() > 0


def test_a_rate_limited_request_waits_as_long_as_the_answer_says() -> None:
    """Prefect Cloud answers 429 with `Retry-After` (Prefect's client honours it too)."""
    sent: list[float] = []

    def request() -> str:
        sent.append(time.monotonic())
        if len(sent) == 1:
            raise _answer(429, {"Retry-After": "0.3"})
        return "lease"

    assert _send(request) == "lease"
    assert len(sent) == 2 and sent[1] - sent[0] >= 0.3


@pytest.mark.parametrize("status", [409, 423, 500])
def test_other_answers_are_not_asked_again(status: int) -> None:
    asked: list[int] = []

    def request() -> None:
        asked.append(status)
        raise _answer(status)

    with pytest.raises(httpx.HTTPStatusError):
        _send(request)
    assert asked == [status]


def test_a_server_busy_for_good_gives_up_after_the_last_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tasks.run_lock.BUSY_FIRST_WAIT", 0.001)
    asked: list[int] = []

    def request() -> None:
        asked.append(503)
        raise _answer(503)

    with pytest.raises(httpx.HTTPStatusError, match="503"):
        _send(request)
    assert len(asked) == BUSY_RETRIES + 1


def test_no_resources_hold_nothing_without_asking_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_server(*_: object) -> None:
        raise AssertionError("the server was asked")

    monkeypatch.setattr("tasks.run_lock._client", no_server)
    with resource_locks([]) as held:
        assert held
