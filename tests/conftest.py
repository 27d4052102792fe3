"""Shared fixtures: one emulator and one Prefect server per process (tests/prefect_server.py;
one server shared by every xdist worker put all their writes on one SQLite file and made the
suite slower), state reset per test, and one running `byok demo` for the tests that need a
real server, deployments and a worker."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
if _worker := os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker its own temp dir (its subprocesses too): the tests that check no spool
    # or secret file is left there must not see another worker's run in progress.
    _tmp = Path(tempfile.gettempdir()) / f"byok-tests-{os.getppid()}-{_worker}"
    _tmp.mkdir(mode=0o700, exist_ok=True)
    os.environ["TMPDIR"] = str(_tmp)
    tempfile.tempdir = None
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from blocks.azure import AzureCredentials
from clients.azure import AzureClients
from clients.context import forget as forget_client_contexts
from console.emulator_blocks import emulator_azure_credentials
from emulator.server import Emulator
from tests import prefect_server

AZURE_BLOCK = "emulator-azure"
_SERVER = pytest.StashKey[prefect_server.Server]()


def _server_timeout() -> int:
    """A loaded machine can take minutes to start a Prefect server (BYOK_TEST_SERVER_TIMEOUT)."""
    return int(os.environ.get("BYOK_TEST_SERVER_TIMEOUT", "300"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the session's Prefect server logged, if anything (its errors)."""
    server = terminalreporter.config.stash.get(_SERVER, None)
    if server and (tail := server.log_tail()):
        terminalreporter.section("Prefect server log (end)")
        terminalreporter.write_line(tail)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that started its Prefect server stops it."""
    if server := config.stash.get(_SERVER, None):
        server.stop()


@pytest.hookimpl(tryfirst=True)  # before xdist's, which names the groups from these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For `pytest -n N --dist loadgroup` (./dev test): the tests that share the running demo
    go to one worker, and a module with a module-scoped fixture stays on one worker, so each
    of those is set up once; every other test goes wherever a worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        if "demo" in info.names_closure:
            item.add_marker(pytest.mark.xdist_group("demo"))
        elif any(
            definition.scope == "module"
            for definitions in info.name2fixturedefs.values()
            for definition in definitions
        ):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    """The emulator, started once."""
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_session: Emulator) -> Emulator:
    """The emulator with a fresh state for this test."""
    emulator_session.reset()
    forget_client_contexts()  # their tokens were signed by the state just dropped
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


class _ServiceFailureCause(logging.Filter):
    """Prefect logs an event or log item its worker failed to send with the item's whole repr
    and, above DEBUG, without the cause: this names the item and its cause instead (the
    traceback of the first few), so a CI log says why the events were lost."""

    tracebacks = 3

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Service %r failed to process item"):
            service, item = record.args if isinstance(record.args, tuple) else ("?", None)
            cause = sys.exc_info()[1]
            record.msg = "Service %r failed to process %s %s: %r"
            record.args = (service, getattr(item, "event", ""), getattr(item, "id", ""), cause)
            if cause is not None and self.tracebacks > 0:
                self.tracebacks -= 1
                record.exc_info = sys.exc_info()
        return True


@pytest.fixture(scope="session")
def prefect_harness(request: pytest.FixtureRequest) -> Iterator[None]:
    """This process's Prefect server (tests/prefect_server.py), as `prefect_test_harness`
    sets one up: the API URL in this process's settings; the log and event workers drained
    at the end."""
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.settings import (
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_API_URL,
        temporary_settings,
    )

    logging.getLogger("prefect._internal.concurrency").addFilter(_ServiceFailureCause())
    if prefect_server.home() is None:
        request.config.stash[_SERVER] = prefect_server.start()
    prefect_server.wait_until_up(_server_timeout())
    settings = {
        PREFECT_API_URL: os.environ["PREFECT_API_URL"],
        PREFECT_API_SSL_CERT_FILE: os.environ["PREFECT_API_SSL_CERT_FILE"],
    }
    with (
        temporary_settings(updates=settings),
        _temporary_global_settings_context(get_settings_context()),
    ):
        _register_block_types()
        yield
        prefect_server.drain_workers()


def _register_block_types() -> None:
    """The project's block types, registered before a test saves a block: two workers saving
    the first block of a type at once race in Prefect's read-then-create (409 Conflict for
    the second); registering again finds the type."""
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError

    from blocks.ibm import IBMCloudCredentials

    for block in (AzureCredentials, IBMCloudCredentials):
        try:
            block.register_type_and_schema()
        except (ObjectAlreadyExists, PrefectHTTPStatusError) as exc:
            if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code != 409:
                raise
            block.register_type_and_schema()


@dataclass
class Demo:
    """`byok demo --keep-running`, up: its output so far, its environment and files."""

    process: subprocess.Popen[str]
    lines: list[str]
    env: dict[str, str]
    state_dir: Path
    home: Path
    api: str
    stderr: Path

    def stop(self) -> int:
        """Ctrl-C, as a terminal sends it (to the demo's process group; its Prefect server
        and worker run in sessions of their own and are the demo's to stop); returns its exit
        code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # hung: killed; its server and worker (in
                # sessions of their own) are left running
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return int(self.process.returncode)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One `byok demo --keep-running` for the session (its own emulator, Prefect server,
    deployments and process worker), shared by the demo test and the scheduled-deployment
    test; the scheduler and the worker poll every second."""
    tmp = tmp_path_factory.mktemp("demo")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if k not in prefect_server.EXPORTED},
        "BYOK_EMULATOR_DIR": str(tmp / "emulator"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    stderr = tmp / "stderr.log"
    with stderr.open("w") as err:
        # started with SIGINT ignored, as a script's background job is: Ctrl-C must still
        # stop it (a shell's `trap`, not preexec_fn, which may deadlock a threaded parent)
        process = subprocess.Popen(
            ["sh", "-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "-m", "console.cli",
             "demo", "--port", str(port), "--home", str(tmp / "home"), "--keep-running"],
            env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
        )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in process.stdout or []:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    running = Demo(
        process, [], env, tmp / "emulator", tmp / "home", f"http://127.0.0.1:{port}/api", stderr
    )
    try:
        # Every procedure, then `prefect deploy --all`: minutes on a loaded machine.
        deadline = time.monotonic() + 2 * int(os.environ.get("BYOK_TEST_SERVER_TIMEOUT", "300"))
        while not any("Keeping the server" in line for line in running.lines):
            assert process.poll() is None, stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, "".join(running.lines)[-3000:]
            with contextlib.suppress(queue.Empty):
                running.lines.append(lines.get(timeout=1))
        yield running
    finally:
        running.stop()


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
