"""One run per target resource at a time: a Prefect global concurrency limit of one slot,
named after the resource id, held by a flow from before its first write to its end.

A second run of the same request either waits for the first (`wait=True`) or fails at once
naming the resource. The slot is a lease: a run that dies without releasing it frees it when
the lease expires (Prefect renews it while the run lives), so a crash never leaves a stuck
lock.

Slots are taken and given back through one Prefect client per process and API, re-sent
after short waits when the server is busy, rather than with Prefect's `concurrency()`: that
makes three new clients per slot (each loading certifi's CA bundle: ~100 ms of CPU a slot),
and Prefect's client waits 2, 4, 8 s before re-sending a 503, which a SQLite server answers
whenever two slot writes overlap. Measured: 30 slots taken from 16 threads, PostgreSQL
4.0-4.1 s before, 1.4-2.6 s now; the fleet rotation's 30 keys on SQLite 15-17 s, now 9-10 s.
The lease is renewed by Prefect's own `maintain_concurrency_lease` (a private module:
prefect is pinned). A run working on many resources at once (the fleet rotation's keys)
takes all their slots under one lease (`resource_locks`)."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import TypeVar
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.context import SettingsContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, Settings

from byok.errors import ConcurrentRun

T = TypeVar("T")
WAIT_SECONDS = 3600.0  # how long a waiting run waits at most
LEASE_SECONDS = 300.0  # a dead holder's slot comes free after this
BUSY_RETRIES = 8  # re-sends of an answer in RESENT or of a dropped connection
RESENT = {408, 429, 502, 503}  # the answers Prefect's client re-sends
BUSY_FIRST_WAIT = 0.05  # seconds, doubling, drawn at random below it: 0.05 … 6.4 s


def lock_name(resource_id: str) -> str:
    """The limit's name: Prefect names refuse '/', so a digest of the lower-cased id (Azure
    ids are case-insensitive) with a readable tail."""
    digest = hashlib.sha256(resource_id.lower().encode()).hexdigest()[:24]
    tail = resource_id.rstrip("/").rsplit("/", 1)[-1][:40].lower()
    return f"byok-run-{tail}-{digest}"


@contextmanager
def resource_lock(resource_id: str, *, wait: bool) -> Iterator[None]:
    """Hold the resource's slot for the block; raise `ConcurrentRun` when another run holds
    it and `wait` is False (or it is still held after `WAIT_SECONDS`)."""
    client = _client(PREFECT_API_URL.value(), PREFECT_API_KEY.value())
    name = lock_name(resource_id)
    _ensure_limit(client, name)
    with _held(client, _acquire(client, name, resource_id, wait=wait)):
        yield


@contextmanager
def resource_locks(resource_ids: list[str]) -> Iterator[bool]:
    """Hold every resource's slot under one lease (one request takes them all, one gives them
    back) and yield True; yield False, holding none, when another run holds any of them (or
    the server refuses the request): the caller then takes each with `resource_lock`, which
    waits or fails for that resource alone. Measured (bench/fleet_rotation.py, 10
    subscriptions, SQLite server): a fleet run's 30 keys took 10.5 s locked one by one,
    1.9 s under one lease, 1.6 s with no lock at all."""
    if not resource_ids:
        yield True
        return
    client = _client(PREFECT_API_URL.value(), PREFECT_API_KEY.value())
    names = [lock_name(resource_id) for resource_id in resource_ids]
    try:
        for name in names:
            _ensure_limit(client, name)
        response = _send(
            lambda: client.increment_concurrency_slots_with_lease(
                names=names, slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
            )
        )
    except (httpx.HTTPStatusError, httpx.TransportError):  # 423: one is held
        taken = None
    else:
        taken = UUID(response.json()["lease_id"])
    if taken is None:
        yield False
        return
    with _held(client, taken):
        yield True


@contextmanager
def _held(client: SyncPrefectClient, lease: UUID) -> Iterator[None]:
    """The lease renewed while the block runs (if renewal fails, the holder is stopped, as
    strict Prefect concurrency does, rather than going on without the slot), then given
    back."""
    try:
        with maintain_concurrency_lease(lease, LEASE_SECONDS, raise_on_lease_renewal_failure=True):
            yield
    finally:
        _send(lambda: client.release_concurrency_slots_with_lease(lease))


@cache
def _client(api_url: str | None, api_key: str | None) -> SyncPrefectClient:
    """The process's client for the API that URL and key name (thread-safe, like the httpx
    client under it); open for the process's life."""
    client = get_client(sync_client=True)
    client.__enter__()
    return client


def _send(request: Callable[[], T]) -> T:
    """`request`, re-sent when Prefect's client would re-send it (a dropped connection; 408,
    429, 502, 503: prefect/client/base.py) after the answer's `Retry-After`, else after a
    short random wait (Prefect's client waits 2, 4, 8 s, so its own re-sends are off here)."""
    for attempt in range(BUSY_RETRIES + 1):
        try:
            with _without_resends():
                return request()
        except (httpx.HTTPStatusError, httpx.TransportError) as exc:
            answer = exc.response if isinstance(exc, httpx.HTTPStatusError) else None
            if attempt == BUSY_RETRIES or (answer is not None and answer.status_code not in RESENT):
                raise
            time.sleep(_pause(answer, attempt))
    raise AssertionError("unreachable")


def _pause(answer: httpx.Response | None, attempt: int) -> float:
    """The answer's `Retry-After` in seconds (Prefect Cloud's 429s say it), else a random
    wait below `BUSY_FIRST_WAIT` doubled per attempt."""
    asked = answer.headers.get("Retry-After", "") if answer is not None else ""
    with suppress(ValueError):  # none, or an HTTP date: wait our own
        return max(0.0, float(asked))
    return random.uniform(0, BUSY_FIRST_WAIT * 2**attempt)


_QUIET_KEPT = 8  # settings objects a process sees: the root's and a few runs' copies
_quiet: dict[int, tuple[Settings, Settings]] = {}  # id(settings): (settings, without re-sends)


def _without_resends() -> SettingsContext:
    """The current settings with Prefect's client re-sends off, made once per settings object
    (`copy_with_update` rebuilds them from the environment: 30-90 ms a call, measured; the
    threads of a run may see different objects, so one each is kept)."""
    current = SettingsContext.get()
    assert current is not None  # Prefect enters its root settings context on import
    kept = _quiet.get(id(current.settings))
    if kept is None or kept[0] is not current.settings:
        quiet = current.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
        if len(_quiet) >= _QUIET_KEPT:
            _quiet.clear()
        kept = _quiet[id(current.settings)] = (current.settings, quiet)
    return SettingsContext(profile=current.profile, settings=kept[1])


def _ensure_limit(client: SyncPrefectClient, name: str) -> None:
    """The one-slot limit, made on first use (read first: the server logs a failed insert)."""
    try:
        _send(lambda: client.read_global_concurrency_limit_by_name(name))
    except ObjectNotFound:
        with suppress(ObjectAlreadyExists):  # another run made it meanwhile
            _send(
                lambda: client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
                )
            )


def _acquire(client: SyncPrefectClient, name: str, resource_id: str, *, wait: bool) -> UUID:
    """The slot's lease; while another run holds it (423), wait as long as the server says
    (up to WAIT_SECONDS) or raise `ConcurrentRun` at once."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            response = _send(
                lambda: client.increment_concurrency_slots_with_lease(
                    names=[name],
                    slots=1,
                    mode="concurrency",
                    lease_duration=LEASE_SECONDS,
                )
            )
            return UUID(response.json()["lease_id"])
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            pause = float(exc.response.headers.get("Retry-After", 1))
            if not wait or time.monotonic() + pause > deadline:
                raise ConcurrentRun(resource_id) from None
            time.sleep(pause)
