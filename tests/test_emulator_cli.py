"""`byok emulator` as a user runs it: a separate process, driven through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests


def byok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "byok.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_serve_then_inject_a_fault_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "BYOK_EMULATOR_DIR": str(tmp_path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "byok.cli", "emulator", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        endpoints_file = tmp_path / "endpoints.json"
        deadline = time.monotonic() + 30
        while not endpoints_file.exists():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.1)
        endpoints = json.loads(endpoints_file.read_text())
        added = byok(
            "emulator",
            "fault",
            "add",
            "status",
            "--status",
            "503",
            "--path",
            "openid-configuration",
            env=env,
        )
        assert added.returncode == 0, added.stderr
        tenant = endpoints["tenant_id"]
        url = f"{endpoints['authority']}/{tenant}/v2.0/.well-known/openid-configuration"
        first = requests.get(url, verify=endpoints["ca_bundle"], timeout=10)
        second = requests.get(url, verify=endpoints["ca_bundle"], timeout=10)
        assert (first.status_code, second.status_code) == (503, 200)
        log = byok("emulator", "requests", "--path", "openid", env=env)
        assert [json.loads(line)["status"] for line in log.stdout.splitlines()] == [503, 200]
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert not (tmp_path / "endpoints.json").exists()
    assert "byok cloud emulator running" in (server.stdout.read() if server.stdout else "")
