"""The real kubectl against an emulated AKS cluster, with the kubeconfig the emulator issues:
the procedure's StorageClass applied (created, unchanged, configured) and refused when its disk
encryption set does not exist. Installs nothing: `kubectl` from BYOK_KUBECTL or PATH
(`./dev setup` installs it; CI runs this test, never skips it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.emulator.test_containerservice import cluster
from tests.helpers import des_in_region

KUBECTL = os.environ.get("BYOK_KUBECTL") or shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    not KUBECTL and not os.environ.get("CI"),  # in CI, ./dev setup installed it: run, or fail
    reason="kubectl is not installed: ./dev setup installs it (or set BYOK_KUBECTL)",
)
STORAGE_CLASS = """\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: byok-azure-disk
provisioner: disk.csi.azure.com
parameters:
  skuname: Standard_LRS
  kind: managed
  diskEncryptionSetID: {des_id}
"""


def test_apply_the_procedures_storage_class(
    azure: AzureClients, emulator: Emulator, tmp_path: Path
) -> None:
    des_id = des_in_region(azure, emulator, "westeurope", "des-aks")
    aks = azure.container_service().managed_clusters
    aks.begin_create_or_update("rg-img", "aks", cluster(des_id)).result()
    config = tmp_path / "kubeconfig"
    config.write_bytes(aks.list_cluster_user_credentials("rg-img", "aks").kubeconfigs[0].value)
    manifest = tmp_path / "byok-azure-disk.yaml"
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(config)}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    manifest.write_text(STORAGE_CLASS.format(des_id=des_id))
    outputs = [kubectl("apply", "-f", str(manifest)) for _ in range(2)]
    manifest.write_text(STORAGE_CLASS.format(des_id=des_id) + "allowVolumeExpansion: true\n")
    outputs.append(kubectl("apply", "-f", str(manifest)))

    assert [o.stdout.strip() for o in outputs] == [
        f"storageclass.storage.k8s.io/byok-azure-disk {state}"
        for state in ("created", "unchanged", "configured")
    ], [o.stderr for o in outputs]
    assert emulator.state is not None
    (stored,) = [
        c.storage_classes["byok-azure-disk"] for c in emulator.state.kubernetes.clusters.values()
    ]
    assert stored["parameters"]["diskEncryptionSetID"] == des_id
    assert stored["allowVolumeExpansion"] is True
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]

    manifest.write_text(
        STORAGE_CLASS.replace("byok-azure-disk", "other").format(des_id=des_id + "-gone")
    )
    refused = kubectl("apply", "-f", str(manifest))
    assert refused.returncode != 0
    assert "does not name an existing disk encryption set" in refused.stderr
