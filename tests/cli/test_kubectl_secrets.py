"""The real kubectl against an emulated AKS cluster with KMS on: `kubectl create namespace`
and `kubectl create secret generic` send protobuf bodies (client-go 1.32), which the emulated
API server reads, answering JSON; `kubectl get secret -o json` reads the Secret back, sealed
with the cluster's KMS key. Installs nothing: `kubectl` from BYOK_KUBECTL or PATH (`./dev
setup` installs it; CI runs this test, never skips it)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.emulator.test_aks_kms import Setup

KUBECTL = os.environ.get("BYOK_KUBECTL") or shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    not KUBECTL and not os.environ.get("CI"),  # in CI, ./dev setup installed it: run, or fail
    reason="kubectl is not installed: ./dev setup installs it (or set BYOK_KUBECTL)",
)


def test_kubectl_creates_and_reads_a_secret_sealed_with_the_kms_key(
    azure: AzureClients, emulator: Emulator, tmp_path: Path
) -> None:
    setup = Setup(azure, emulator)
    setup.allow(["encrypt", "decrypt"])
    setup.put(setup.key_id).result()
    config = tmp_path / "kubeconfig"
    config.write_bytes(
        setup.clusters.list_cluster_user_credentials("rg", "aks").kubeconfigs[0].value
    )
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(config)}

    def kubectl(*args: str) -> str:
        assert KUBECTL is not None
        done = subprocess.run(
            [KUBECTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    emulator.requests.clear()
    assert kubectl("create", "namespace", "apps") == "namespace/apps created"
    created = kubectl(
        "create", "secret", "generic", "db", "-n", "apps",
        "--from-literal=user=admin", "--from-literal=password=s3cr3t",
    )  # fmt: skip
    assert created == "secret/db created"
    assert [r.status for r in emulator.requests.find("POST", "/secrets$")] == [201]

    found = json.loads(kubectl("get", "secret", "db", "-n", "apps", "-o", "json"))
    assert (found["kind"], found["type"], found["metadata"]["namespace"]) == (
        "Secret",
        "Opaque",
        "apps",
    )
    assert {k: base64.b64decode(v).decode() for k, v in found["data"].items()} == {
        "user": "admin",
        "password": "s3cr3t",
    }
    assert setup.sealed_with() == {"apps/db": setup.key_id}
