"""The Prefect server of a pytest process: its workers, CLIs and subprocesses all use it.

Each pytest process starts its own on first use (one server shared by the xdist workers
made them queue on its database): a temporary PREFECT_HOME, what `prefect_test_harness` gives
its server (no UI; the services of an ephemeral server), and the API on a socket bound here,
so its address is known at once. `PREFECT_API_URL` and `HOME_ENV` are exported: processes
started afterwards (the CLIs the tests run) find it, and each waits until it answers.

Its database is a new one on the PostgreSQL server that BYOK_TEST_POSTGRES names (`./dev
test` starts `./dev postgres` and sets it), else SQLite in its home. SQLite refuses a write
transaction that races another ("database is locked": a 503 the client retries 2 s later,
PrefectHQ/prefect#9938), and a flow run's lock slot raced the server's own writes of the
run's first events: most flow tests ran three times slower on SQLite.

Also exported, `PREFECT_API_SSL_CERT_FILE`: one CA certificate. Every Prefect client builds
an SSL context from it, even for this http:// API, and the default (certifi's whole bundle)
costs ~25 ms of CPU a client, a few hundred clients a minute.

`python -m tests.prefect_server FD PID` is the server process: uvicorn serving Prefect's app
on the inherited socket, until stopped or until process PID (the pytest that started it) is
gone, killed without stopping it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
HOME_ENV = "BYOK_TEST_PREFECT_HOME"  # the server's PREFECT_HOME, for the processes it serves
POSTGRES_ENV = "BYOK_TEST_POSTGRES"  # a PostgreSQL server's URL, for the servers' databases
_DATABASE_PREFIX = "byok_test_"
T = TypeVar("T")


# What a process needs to use the server (the demo, with its own server, is given none).
EXPORTED = ("PREFECT_API_URL", "PREFECT_API_SSL_CERT_FILE", HOME_ENV)


def home() -> Path | None:
    """The home of the running server this process uses, if any."""
    value = os.environ.get(HOME_ENV)
    return Path(value) if value else None


def database_url(home: Path) -> str:
    """The database of the server at `home`: on PostgreSQL, named after the home (whose name
    holds the pid of the process that made it)."""
    if base := os.environ.get(POSTGRES_ENV):
        name = _DATABASE_PREFIX + home.name.removeprefix("byok-prefect-").replace("-", "_")
        return make_url(base).set(database=name.lower()).render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{home / 'prefect.db'}"


def _on_postgres(url: str, database: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """`work(connection)` on `database` of `url`'s PostgreSQL server."""
    import asyncio

    import asyncpg

    async def run() -> T:
        parts = make_url(url)
        connection = await asyncpg.connect(
            user=parts.username,
            password=parts.password,
            host=parts.query.get("host") or parts.host,
            port=parts.port,
            database=database,
        )
        try:
            return await work(connection)
        finally:
            await connection.close()

    return asyncio.run(run())


def _reset_postgres(url: str, *, create: bool) -> None:
    """Drop the database of `url` and those left by test processes now gone; make it again,
    empty, when `create`."""
    import asyncpg

    name = str(make_url(url).database)

    def gone(other: str) -> bool:
        pid = other.removeprefix(_DATABASE_PREFIX).split("_", 1)[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (ValueError, PermissionError):  # not named by a pid, or another user's
            return False
        return False

    async def work(connection: Any) -> None:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", _DATABASE_PREFIX
        )
        for other in (row["datname"] for row in rows):
            if other == name or gone(other):
                with suppress(asyncpg.PostgresError):  # another process dropped it first
                    await connection.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
        if create:
            await connection.execute(f'CREATE DATABASE "{name}"')

    _on_postgres(url, "postgres", work)


def stored(home: Path) -> dict[str, bytes]:
    """Everything the server at `home` has stored, by where: its SQLite files (database and
    journals), or on PostgreSQL every table's rows as text (bytea as hex)."""
    url = database_url(home)
    if not url.startswith("postgresql"):
        return {p.name: p.read_bytes() for p in home.iterdir() if p.name.startswith("prefect.db")}

    async def work(connection: Any) -> dict[str, bytes]:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        contents = {}
        for table in (row["tablename"] for row in tables):
            rows = await connection.fetch(f'SELECT t::text AS row FROM "{table}" t')
            contents[table] = "\n".join(row["row"] for row in rows).encode()
        return contents

    return _on_postgres(url, str(make_url(url).database), work)


@dataclass
class Server:
    """The server process this process started."""

    process: subprocess.Popen[bytes]
    home: Path

    def log_tail(self, size: int = 4000) -> str:
        """The end of what the server logged (errors only)."""
        log = self.home / "server.log"
        return log.read_text(errors="replace")[-size:] if log.exists() else ""

    def stop(self) -> None:
        """Stop it and remove its home and database."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if (url := database_url(self.home)).startswith("postgresql"):
            _reset_postgres(url, create=False)
        shutil.rmtree(self.home, ignore_errors=True)


def start() -> Server:
    """Start the server (without waiting for it) and export its address."""
    server_home = Path(tempfile.mkdtemp(prefix=f"byok-prefect-{os.getpid()}-"))
    if (url := database_url(server_home)).startswith("postgresql"):
        _reset_postgres(url, create=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(server_home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "0",
        # a request refused as busy (503: SQLite locked, pool exhausted) is logged: the
        # session's summary shows the log (`log_tail`)
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    env.pop("PREFECT_API_URL", None)
    with (
        socket.socket() as sock,
        (server_home / "server.log").open("wb") as log,
    ):
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.prefect_server", str(sock.fileno()), str(os.getpid())],
            pass_fds=[sock.fileno()],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_SSL_CERT_FILE"] = str(_one_ca_certificate(server_home))
    os.environ[HOME_ENV] = str(server_home)
    return Server(process, server_home)


def _one_ca_certificate(server_home: Path) -> Path:
    """The first certificate of certifi's bundle, in a file of its own."""
    import certifi

    bundle = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----"
    first = bundle[bundle.index("-----BEGIN CERTIFICATE-----") : bundle.index(end) + len(end)]
    path = server_home / "api-ca.pem"
    path.write_text(first + "\n")
    return path


@contextmanager
def using(api: str) -> Iterator[None]:
    """This process's Prefect clients pointed at the server at `api` (the demo's) inside the
    block. Prefect keeps one event worker and one log worker a process, whatever the API URL
    (`EventsWorker.instance()` keys a running server's client by no option), and each binds
    the URL current when it starts: both are drained on the way in and out, so that what is
    emitted inside goes to `api` and what follows back to this process's server. Else the
    next tests' events went to the other server, each failing there as its flow is unknown
    (a lost `byok.key.rotated`, a CI failure)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    drain_workers()
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            yield
    finally:
        drain_workers()


def drain_workers() -> None:
    """Send what this process's Prefect log and event workers still hold, and stop them (the
    next log or event starts new ones, bound to the API URL current then)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)


def wait_until_up(timeout: float) -> None:
    """Return once the exported server answers its health check."""
    url = f"{os.environ['PREFECT_API_URL']}/health"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            log = home() / "server.log"  # type: ignore[operator]
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise TimeoutError(f"the test Prefect server at {url} did not answer: {tail}")
        time.sleep(0.2)


def serve(fd: int, parent: int) -> None:
    """Serve Prefect's API on the socket `fd` until terminated or orphaned; an orphan also
    removes its home."""
    import uvicorn

    config = uvicorn.Config(
        "prefect.server.api.server:create_app", factory=True, lifespan="on", log_level="error"
    )
    server = uvicorn.Server(config)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        server.should_exit = True

    threading.Thread(target=watch, daemon=True).start()
    server.run(sockets=[socket.socket(fileno=fd)])
    if os.getppid() != parent:
        shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
