"""One context's clients share one HTTP transport whose pool holds a fleet run's threads and
which reads the environment once (proxies, CA bundle), not on every request."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests.sessions
from azure.core.exceptions import ServiceRequestError

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


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy", "NO_PROXY", "no_proxy")  # fmt: skip


def _from_environment(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, retry_total: int
) -> AzureClients:
    """A context of its own (a new transport) whose block names no CA bundle, in an
    environment without proxies: TLS trust of the emulator comes from REQUESTS_CA_BUNDLE, as
    a user behind an inspecting proxy sets it."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_path))
    return AzureClients.of(emulator_credentials(emulator, ca_bundle=None, retry_total=retry_total))


def test_without_a_proxy_the_environment_is_read_once_not_per_request(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = _from_environment(emulator, monkeypatch, retry_total=7)
    groups = clients.resources().resource_groups
    groups.create_or_update("rg", {"location": "westeurope"})
    looked_up: list[str] = []
    for name in ("get_environ_proxies", "get_netrc_auth"):  # what requests reads per request
        real = getattr(requests.sessions, name)
        monkeypatch.setattr(
            requests.sessions,
            name,
            lambda *a, _n=name, _f=real, **k: looked_up.append(_n) or _f(*a, **k),
        )

    assert [groups.get("rg").name for _ in range(5)] == ["rg"] * 5  # trusted: the variable's CA
    assert looked_up == []


def test_a_proxy_in_the_environment_is_honoured_with_its_exceptions(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = _from_environment(emulator, monkeypatch, retry_total=0)
    clients.credential.get_token(clients.endpoints.arm_scope)  # the token, before any proxy
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there
    groups = clients.resources().resource_groups  # its transport made now, a proxy set
    with pytest.raises(ServiceRequestError, match="Unable to connect to proxy"):
        groups.get("rg")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # read per request, as requests does
    assert groups.create_or_update("rg", {"location": "westeurope"}).name == "rg"
