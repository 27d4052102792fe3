"""`byok demo`, the README's first command, as a user runs it: its own emulator and Prefect
server, every procedure that has landed, a summary."""

from __future__ import annotations

import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_runs_the_procedures() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "byok.cli", "demo", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "SIGEncryption: Registered" in out
    assert "disk encryption set des-byok-demo" in out
    assert "node pools system, userpool" in out
    assert "StorageClass byok-azure-disk for data disks: created" in out
    assert "image version 1.0.0 replicated to westeurope" in out
    assert "VM vm-byok-demo with every disk on des-byok-demo" in out
    assert "registry acrbyokdemo.azurecr.io encrypted with https://127.0.0.1:" in out
    assert "imported encrypted; virtual server" in out
    assert "deployments in work pool byok-process" in out
    assert "Prefect UI: http://127.0.0.1:" in out
    assert "emulator-client-secret" not in out + run.stderr
    assert "emulator-ibm-api-key" not in out + run.stderr
