"""Shared fixtures: one emulator per session (state reset per test) and one Prefect test
harness per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from blocks.azure import AzureCredentials
from byok.emulator_blocks import emulator_azure_credentials
from clients.azure import AzureClients
from emulator.server import Emulator

AZURE_BLOCK = "emulator-azure"


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    """The emulator, started once."""
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_session: Emulator) -> Emulator:
    """The emulator with a fresh state for this test."""
    emulator_session.reset()
    return emulator_session


def emulator_credentials(emulator: Emulator, **overrides: object) -> AzureCredentials:
    """An AzureCredentials block pointing at the emulator, with short LRO polling."""
    return emulator_azure_credentials(emulator, **{"polling_interval_seconds": 0.02, **overrides})


@pytest.fixture
def azure_credentials(emulator: Emulator) -> AzureCredentials:
    """Credentials for the emulator."""
    return emulator_credentials(emulator)


@pytest.fixture
def azure(azure_credentials: AzureCredentials) -> AzureClients:
    """SDK clients for the emulator, from the one factory."""
    return AzureClients(azure_credentials)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def azure_block(prefect_harness: None, emulator: Emulator) -> str:
    """The name of a saved credentials block pointing at the emulator."""
    emulator_credentials(emulator).save(AZURE_BLOCK, overwrite=True)
    return AZURE_BLOCK
