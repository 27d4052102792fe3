"""A flow run's process imports only the SDKs its flow uses (issue 19, item 7): the client
layer loads each SDK when a client is first built (clients.lazy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients.lazy import if_loaded

ROOT = Path(__file__).resolve().parents[1]
# Packages no step of the flow uses, each 0.3-3 s to import.
NOT_FOR_AZURE_DES = (
    "azure.mgmt.network",
    "azure.mgmt.containerservice",
    "azure.mgmt.containerregistry",
    "azure.mgmt.resourcegraph",
    "ibm_vpc",
    "ibm_platform_services",
    "ibm_boto3",
    "kubernetes",
    "dask",
    "distributed",
    "trestle",
    "numpy",
)
NOT_FOR_IBM_ROTATION = (
    "azure.mgmt.compute",
    "azure.mgmt.network",
    "azure.mgmt.keyvault",
    "ibm_vpc",
    "kubernetes",
    "dask",
    "trestle",
)
# tasks/retry.py imports them to classify their exceptions (a change asked of its owner).
IBM_CORE = ("SoftLayer", "ibm_cloud_sdk_core", "ibm_botocore")


FLOWS = {
    "flows.disk_encryption_set": NOT_FOR_AZURE_DES + IBM_CORE,
    "flows.ibm_rotation": NOT_FOR_IBM_ROTATION,
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """Per flow module, which of its packages a fresh interpreter holds after importing it
    (the interpreters run side by side)."""
    processes = {
        module: subprocess.Popen(
            [sys.executable, "-c", f"import sys, {module}\nprint(*sorted(sys.modules))"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for module in FLOWS
    }
    found = {}
    for module, process in processes.items():
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, module
        found[module] = [p for p in FLOWS[module] if p in out.split()]
    return found


@pytest.mark.parametrize(
    ("module", "unused"),
    [
        ("flows.disk_encryption_set", NOT_FOR_AZURE_DES),
        ("flows.ibm_rotation", NOT_FOR_IBM_ROTATION),
    ],
)
def test_a_flow_module_loads_no_sdk_it_does_not_use(
    loaded: dict[str, list[str]], module: str, unused: tuple[str, ...]
) -> None:
    assert [p for p in loaded[module] if p in unused] == []


def test_an_azure_flow_loads_no_ibm_sdk(loaded: dict[str, list[str]]) -> None:
    assert [p for p in loaded["flows.disk_encryption_set"] if p in IBM_CORE] == []


def test_an_sdk_exception_class_is_looked_up_only_once_its_sdk_is_loaded() -> None:
    assert if_loaded("json.decoder:JSONDecodeError") == (json.JSONDecodeError,)
    assert if_loaded("byok_never_imported.errors:ApiError") == ()
    assert "byok_never_imported.errors" not in sys.modules
