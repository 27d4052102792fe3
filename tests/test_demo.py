"""`byok demo`, the README's first command, as a user runs it: its own emulator and Prefect
server, every procedure that has landed, a summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

from tests.conftest import Demo


def byok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_runs_the_procedures(demo: Demo) -> None:
    """The demo, kept running: while it is up, `byok emulator …` drives its emulator; Ctrl-C
    stops it cleanly (the session's other users of the demo ran before: tests/flows sorts
    first)."""
    for name in ("endpoints.json", "az-env.sh"):
        assert (demo.state_dir / name).stat().st_mode & 0o777 == 0o600
    # the UI, on the demo's own port (not 4200), talks to the demo's API
    ui = demo.api.removesuffix("/api")
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as response:
        assert json.load(response)["api_url"] == demo.api
    logged = byok(
        "emulator", "requests", "--path", "diskEncryptionSets/des-byok-demo$", env=demo.env
    )
    assert logged.returncode == 0, logged.stderr
    assert {json.loads(line)["method"] for line in logged.stdout.splitlines()} >= {"PUT", "GET"}
    assert demo.stop() == 0, demo.stderr.read_text()[-3000:]
    assert not (demo.state_dir / "endpoints.json").exists()
    out = "".join(demo.lines)
    errors = demo.stderr.read_text()
    assert f"source {demo.state_dir.resolve() / 'az-env.sh'}" in out
    assert "SIGEncryption: Registered" in out
    assert "disk encryption set des-byok-demo" in out
    assert "node pools system, userpool" in out
    assert "StorageClass byok-azure-disk for data disks: created" in out
    assert "image version 1.0.0 replicated to westeurope" in out
    assert "VM vm-byok-demo with every disk on des-byok-demo" in out
    assert "registry acrbyokdemo.azurecr.io encrypted with https://127.0.0.1:" in out
    assert "imported encrypted; virtual server" in out
    assert re.search(r"VPC   LUKS qcow2 cos://\S+ imported as image \S+ \(available\)", out)
    assert "KMS key rotated to" in out
    assert "Secrets re-encrypted, none left on the old version" in out
    assert "resources in 2 subscriptions and 1 IBM account" in out and " non-compliant " in out
    assert "Blast radius of https://127.0.0.1:" in out
    assert re.search(r"Fleet rotation fleet-\w+-\d{8}: [1-9]\d* keys at a new version", out)
    assert re.search(r"Revocation drill on https://\S+/keys/des-key: [1-9]\d* dependents", out)
    assert ", 0 failed (artifact revocation-drill-des-key)" in out
    assert "H1    managed HSM hsm-byok-demo (activated by its officers), RSA-HSM key" in out
    assert re.search(r"X1    cross-tenant set des-xt-demo in this tenant with key \S+ of", out)
    assert "V1    confidential VM cvm-byok-demo on set des-cvm-demo" in out
    assert "V2    offline rotation: 1 VM(s) deallocated" in out and "1 started again" in out
    assert "deployments in work pool byok-process" in out
    assert "Prefect UI: http://127.0.0.1:" in out
    assert "emulator-client-secret" not in out + errors
    assert "emulator-ibm-api-key" not in out + errors
    # The blocks and the key that decrypts them live in the demo's database: owner only.
    assert demo.home.stat().st_mode & 0o777 == 0o700
    assert (demo.home / "prefect.db").stat().st_mode & 0o777 == 0o600
