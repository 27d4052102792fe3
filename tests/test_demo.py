"""`byok demo`, the README's first command, as a user runs it: its own emulator and Prefect
server, every procedure that has landed, a summary."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def byok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_runs_the_procedures(tmp_path: Path) -> None:
    """The demo, kept running: while it is up, `byok emulator …` drives its emulator."""
    state_dir = tmp_path / "emulator"
    env = {**os.environ, "BYOK_EMULATOR_DIR": str(state_dir)}
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console.cli",
                "demo",
                "--port",
                str(free_port()),
                "--home",
                str(tmp_path / "home"),
                "--keep-running",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in demo.stdout or []:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 300
    try:
        while not any("Keeping the server" in line for line in seen):
            assert demo.poll() is None, stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, "".join(seen)[-3000:]
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        for name in ("endpoints.json", "az-env.sh"):
            assert (state_dir / name).stat().st_mode & 0o777 == 0o600
        logged = byok(
            "emulator", "requests", "--path", "diskEncryptionSets/des-byok-demo$", env=env
        )
        assert logged.returncode == 0, logged.stderr
        assert {json.loads(line)["method"] for line in logged.stdout.splitlines()} >= {"PUT", "GET"}
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    assert demo.returncode == 0, stderr.read_text()[-3000:]
    assert not (state_dir / "endpoints.json").exists()
    out = "".join(seen)
    assert f"source {state_dir.resolve() / 'az-env.sh'}" in out
    assert "SIGEncryption: Registered" in out
    assert "disk encryption set des-byok-demo" in out
    assert "node pools system, userpool" in out
    assert "StorageClass byok-azure-disk for data disks: created" in out
    assert "image version 1.0.0 replicated to westeurope" in out
    assert "VM vm-byok-demo with every disk on des-byok-demo" in out
    assert "registry acrbyokdemo.azurecr.io encrypted with https://127.0.0.1:" in out
    assert "imported encrypted; virtual server" in out
    assert "resources in 2 subscriptions" in out and " non-compliant " in out
    assert "Blast radius of https://127.0.0.1:" in out
    assert "deployments in work pool byok-process" in out
    assert "Prefect UI: http://127.0.0.1:" in out
    assert "emulator-client-secret" not in out + stderr.read_text()
    assert "emulator-ibm-api-key" not in out + stderr.read_text()
    # The blocks and the key that decrypts them live in the demo's database: owner only.
    home = tmp_path / "home"
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "prefect.db").stat().st_mode & 0o777 == 0o600
