"""One run per resource: the second holder waits or fails fast, never both at once."""

from __future__ import annotations

import threading
import time

import pytest

from byok.errors import ConcurrentRun
from tasks.run_lock import lock_name, resource_lock

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
