"""One context's clients share one HTTP transport whose pool holds a fleet run's threads."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from clients.azure import HTTP_POOL_SIZE, AzureClients
from emulator.server import Emulator
from tests.conftest import emulator_credentials


def test_thirty_threads_share_the_connections_without_dropping_any(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    clients = AzureClients.of(emulator_credentials(emulator))
    groups = clients.resources().resource_groups
    groups.create_or_update("rg", {"location": "westeurope"})
    assert clients.compute()._client._pipeline._transport is clients.transport
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    threads = 30
    assert threads < HTTP_POOL_SIZE
    with ThreadPoolExecutor(threads) as pool:
        names = list(pool.map(lambda _: groups.get("rg").name, range(threads * 4)))
    assert names == ["rg"] * threads * 4
    assert [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()] == []
