"""`byok emulator az-env`: the lines that point a private Azure CLI at the emulator (no `az`
needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from console.az_env import CLOUD_NAME, az_env_lines

ENDPOINTS = {
    "arm": "https://127.0.0.1:4443/",
    "ca_bundle": "/state/tls/ca.pem",
    "tenant_id": "tenant-1",
    "client_id": "client-1",
    "client_secret": "the secret",
}


def test_lines_set_up_a_private_configuration() -> None:
    lines = az_env_lines(ENDPOINTS, "the secret", Path("/state/azure-cli"))
    assert lines[:4] == [
        "export AZURE_CONFIG_DIR=/state/azure-cli",
        "export REQUESTS_CA_BUNDLE=/state/tls/ca.pem",
        "export AZURE_CORE_INSTANCE_DISCOVERY=false",
        "export AZURE_CORE_COLLECT_TELEMETRY=false",
    ]
    assert lines[4].startswith(
        f"az cloud register -n {CLOUD_NAME} --endpoint-resource-manager https://127.0.0.1:4443/"
    )
    assert f"az cloud set -n {CLOUD_NAME}" in lines[5]
    assert lines[-1] == (
        "az login --service-principal -u client-1 -p 'the secret' --tenant tenant-1 --output none"
    )


def test_az_env_writes_a_private_file(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps(ENDPOINTS))
    target = tmp_path / "az-env.sh"
    command = ["emulator", "--state-dir", str(tmp_path), "az-env", str(target)]
    done = subprocess.run(
        [sys.executable, "-m", "console.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_text().splitlines() == az_env_lines(
        ENDPOINTS, "the secret", tmp_path.resolve() / "azure-cli"
    )
