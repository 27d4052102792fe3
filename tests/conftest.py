"""Shared fixtures: one emulator per session (state reset per test) and one Prefect test
harness per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from blocks.azure import AzureCredentials
from clients.azure import AzureClients
from console.emulator_blocks import emulator_azure_credentials
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

    # A loaded machine can take minutes to start the server (BYOK_TEST_SERVER_TIMEOUT).
    timeout = int(os.environ.get("BYOK_TEST_SERVER_TIMEOUT", "300"))
    with prefect_test_harness(server_startup_timeout=timeout):
        yield


@pytest.fixture
def azure_block(prefect_harness: None, emulator: Emulator) -> str:
    """The name of a saved credentials block pointing at the emulator."""
    emulator_credentials(emulator).save(AZURE_BLOCK, overwrite=True)
    return AZURE_BLOCK


# -- IBM Cloud --------------------------------------------------------------------------------
from blocks.ibm import IBMCloudCredentials  # noqa: E402
from clients.ibm import IBMClients  # noqa: E402
from console.emulator_blocks import emulator_ibm_credentials  # noqa: E402


@pytest.fixture
def ibm_credentials(emulator: Emulator) -> IBMCloudCredentials:
    """IBM credentials for the emulator's seeded account; SoftLayer transactions shortened."""
    assert emulator.state is not None
    softlayer = emulator.state.softlayer
    softlayer.import_seconds = softlayer.export_seconds = softlayer.provision_seconds = 0.2
    return emulator_ibm_credentials(emulator)


@pytest.fixture
def ibm(ibm_credentials: IBMCloudCredentials) -> IBMClients:
    """IBM SDK clients for the emulator, from the one factory (retry waits kept short)."""
    clients = IBMClients(ibm_credentials)
    clients.max_retry_interval = 1.0
    return clients


ROLE = "crn:v1:bluemix:public:iam::::serviceRole:"


def _attributes(**values: str) -> list[dict[str, object]]:
    return [{"attributes": [{"name": k, "value": v} for k, v in values.items()]}]


@pytest.fixture
def ibm_grant(ibm: IBMClients, ibm_credentials: IBMCloudCredentials):
    """Create IAM policies: `ibm_grant(iam_id, "kms", "Reader", serviceInstance=…)` for access,
    `ibm_grant(None, "kms", "Reader", source="server-protect")` for an authorization."""
    policies = ibm.policies()
    account = ibm_credentials.account_id

    def grant(iam_id: str | None, service: str, role: str, source: str | None = None, **resource):
        subject = (
            _attributes(iam_id=str(iam_id))
            if source is None
            else _attributes(accountId=account, serviceName=source)
        )
        return policies.create_policy(
            type="access" if source is None else "authorization",
            subjects=subject,
            roles=[{"role_id": ROLE + role}],
            resources=_attributes(accountId=account, serviceName=service, **resource),
        ).get_result()

    return grant


@pytest.fixture
def ibm_service_id(ibm: IBMClients, ibm_credentials: IBMCloudCredentials) -> tuple[str, str]:
    """A new service ID without any policy, and the value of its API key."""
    identity = ibm.identity()
    service_id = identity.create_service_id(
        account_id=ibm_credentials.account_id, name="byok-importer"
    ).get_result()
    key = identity.create_api_key(
        name="byok-importer-key", iam_id=service_id["iam_id"]
    ).get_result()
    return service_id["iam_id"], key["apikey"]


IBM_BLOCK = "emulator-ibm"


@pytest.fixture
def ibm_block(prefect_harness: None, ibm_credentials: IBMCloudCredentials) -> str:
    """The name of a saved IBM credentials block pointing at the emulator."""
    ibm_credentials.save(IBM_BLOCK, overwrite=True)
    return IBM_BLOCK
