"""One run per target resource at a time: a Prefect global concurrency limit of one slot,
named after the resource id, held by a flow from before its first write to its end.

A second run of the same request either waits for the first (`wait=True`) or fails at once
naming the resource. The slot is a lease: a run that dies without releasing it frees it when
the lease expires (Prefect renews it while the run lives), so a crash never leaves a stuck
lock."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from byok.errors import ConcurrentRun

WAIT_SECONDS = 3600.0  # how long a waiting run waits at most
LEASE_SECONDS = 300.0  # a dead holder's slot comes free after this
SERVER_ATTEMPTS = 4  # tries when the Prefect server answers 503 (busy), 1+2+4 s apart


def lock_name(resource_id: str) -> str:
    """The limit's name: Prefect names refuse '/', so a digest of the lower-cased id (Azure
    ids are case-insensitive) with a readable tail."""
    digest = hashlib.sha256(resource_id.lower().encode()).hexdigest()[:24]
    tail = resource_id.rstrip("/").rsplit("/", 1)[-1][:40].lower()
    return f"byok-run-{tail}-{digest}"


def _ensure_limit(name: str) -> None:
    """The one-slot limit, made on first use (read first: the server logs a failed insert)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run made it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
                )


@contextmanager
def resource_lock(resource_id: str, *, wait: bool) -> Iterator[None]:
    """Hold the resource's slot for the block; raise `ConcurrentRun` when another run holds
    it and `wait` is False (or it is still held after `WAIT_SECONDS`)."""
    name = lock_name(resource_id)
    _ensure_limit(name)
    # Fail fast means: give up on the first "held" answer (423), not after a time a slow
    # Prefect API could use up on its own.
    options = {"timeout_seconds": WAIT_SECONDS} if wait else {"max_retries": 0}
    with ExitStack() as stack:
        for attempt in range(SERVER_ATTEMPTS):
            try:
                stack.enter_context(
                    concurrency(name, lease_duration=LEASE_SECONDS, strict=True, **options)
                )
                break
            except TimeoutError as exc:
                raise ConcurrentRun(resource_id) from exc
            except ConcurrencySlotAcquisitionError as exc:
                status = (
                    exc.__cause__.response.status_code
                    if isinstance(exc.__cause__, httpx.HTTPStatusError)
                    else None
                )
                if status == 423:
                    raise ConcurrentRun(resource_id) from exc
                # a busy Prefect server (SQLite under fleet load answers 503): try again
                if status != 503 or attempt == SERVER_ATTEMPTS - 1:
                    raise
                time.sleep(2**attempt)
        yield
