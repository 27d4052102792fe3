"""One context's clients share one HTTP transport whose pool holds a fleet run's threads."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from byok.rotation import KEY_THREADS, THREADS_MAX
from clients.azure import AzureClients
from emulator.server import Emulator
from tests.conftest import emulator_credentials


def test_a_fleet_runs_threads_share_the_connections_without_dropping_any(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """As many threads as a fleet run may have in one process (the most moves a request may
    ask for, and the keys) each hold a connection at once, and the pool keeps them all."""
    clients = AzureClients.of(emulator_credentials(emulator))
    groups = clients.resources().resource_groups
    groups.create_or_update("rg", {"location": "westeurope"})
    assert clients.compute()._client._pipeline._transport is clients.transport
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    threads = THREADS_MAX + KEY_THREADS
    together = threading.Barrier(threads)

    def requests_at_once(_: int) -> str | None:
        together.wait()
        return groups.get("rg").name

    with ThreadPoolExecutor(threads) as pool:
        assert list(pool.map(requests_at_once, range(threads))) == ["rg"] * threads
    assert [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()] == []


def test_threads_that_start_together_fetch_one_token(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """azure-identity does not coalesce concurrent token requests: a context's credential
    fetches one token per scope however many threads ask at once (a Dask worker's share of
    moves starting), and the credential's own connection pool (urllib3's 10) drops none."""
    block = emulator_credentials(emulator, retry_total=9)  # a context of its own: no token yet
    clients = AzureClients.of(block)
    groups = clients.resources().resource_groups
    emulator.requests.clear()
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    threads = 32
    together = threading.Barrier(threads)

    def first_request(_: int) -> int:
        together.wait()
        return len(list(groups.list()))

    with ThreadPoolExecutor(threads) as pool:
        assert len(set(pool.map(first_request, range(threads)))) == 1
    # without OneFetchPerScope: 32 discoveries of the tenant and 4 token requests (measured)
    assert len(emulator.requests.find("GET", r"/openid-configuration$")) == 1
    assert len(emulator.requests.find("POST", r"/oauth2/v2\.0/token$")) == 1
    assert len(emulator.requests.find("GET", r"/resourcegroups$")) == threads
    assert [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()] == []
