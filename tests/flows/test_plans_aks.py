"""Plan before apply (`plan_only`) and honest re-run output for the AKS flows: a plan reads
and writes nothing and names what each step would do, the run does it, a re-run says
`unchanged` and writes nothing, a plan after a changed parameter names the field."""

from __future__ import annotations

from typing import Any

import pytest

from byok.aks_kms import EnableKmsRequest, RotateKmsRequest
from byok.outcomes import Plan
from clients.azure import AzureClients
from emulator.server import Emulator
from flows.aks import (
    AksClusterRequest,
    DataDiskEncryptionRequest,
    NodePoolRequest,
    add_encrypted_node_pool,
    create_encrypted_aks_cluster,
    encrypt_aks_data_disks,
)
from flows.aks_kms import enable_aks_kms_encryption, rotate_aks_kms_key
from flows.disk_encryption_set import DiskEncryptionSetRequest, prepare_disk_encryption_set
from tests.flows.test_aks_kms import SECRETS, Cluster, enable, rotate
from tests.helpers import outcomes, run_with_tables, write_requests


@pytest.fixture
def des_id(azure_block: str) -> str:
    prepared = prepare_disk_encryption_set(
        DiskEncryptionSetRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-plan-des",
            location="westeurope",
            vault_name="kv-plan-aks",
            key_name="aks-key",
            des_name="des-plan-aks",
            propagation_timeout_minutes=0.5,
        )
    )
    return prepared.disk_encryption_set.id


def planned(emulator: Emulator, flow: Any, request: Any) -> list[tuple[str, str]]:
    """Run `flow` with `plan_only`: it writes nothing; its plan (result and artifact) as
    (step, outcome) rows."""
    before = len(emulator.requests.find())
    plan, tables = run_with_tables(flow, request.model_copy(update={"plan_only": True}))
    assert write_requests(emulator, before) == []
    assert isinstance(plan, Plan)
    assert [s.row() for s in plan.steps] == tables[f"{plan.flow}-plan"]
    return [(s.step, s.said()) for s in plan.steps]


def summary(emulator: Emulator, flow: Any, request: Any, writes: bool = True) -> list[Any]:
    """Run `flow`: its summary's (step, outcome) rows; `writes` False: it wrote nothing."""
    before = len(emulator.requests.find())
    _, tables = run_with_tables(flow, request)
    assert bool(write_requests(emulator, before)) == writes, write_requests(emulator, before)
    (name,) = [key for key in tables if key.endswith("-summary")]
    return outcomes(tables[name])


def test_cluster_and_node_pool(azure_block: str, emulator: Emulator, des_id: str) -> None:
    cluster = AksClusterRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-plan-aks",
        location="westeurope",
        cluster_name="aks-plan",
        disk_encryption_set_id=des_id,
        propagation_timeout_minutes=0.5,
    )
    create, verify = (
        "Create the cluster with encrypted OS disks",
        "Verify the cluster's disk encryption set",
    )
    assert [
        (s, o.split(" (")[0]) for s, o in planned(emulator, create_encrypted_aks_cluster, cluster)
    ] == [
        ("Create resource group", "would create"),
        (create, "would create"),
        (verify, "would verify"),
    ]
    assert (
        emulator.arm.get(
            f"/subscriptions/{emulator.identity.subscription_id}/resourceGroups/rg-plan-aks"
        )
        is None
    )
    assert summary(emulator, create_encrypted_aks_cluster, cluster) == [
        ("Create resource group", "created"),
        (create, "created"),
        (verify, "verified"),
    ]
    assert summary(emulator, create_encrypted_aks_cluster, cluster, writes=False) == [
        ("Create resource group", "unchanged"),
        (create, "unchanged"),
        (verify, "verified"),
    ]
    bigger = cluster.model_copy(update={"node_count": 3})
    assert planned(emulator, create_encrypted_aks_cluster, bigger)[1] == (
        create,
        "exists, unchanged (kept as it is: system pool count 1 (asked 3))",
    )
    emulator.arm.configure_feature("Microsoft.Compute", "EncryptionAtHost", polls=1)
    at_host = cluster.model_copy(update={"enable_encryption_at_host": True})
    plan = planned(emulator, create_encrypted_aks_cluster, at_host)
    assert plan[0] == ("Register the feature the request needs", "would register (NotRegistered)")
    assert (
        create,
        "exists, unchanged (kept as it is: system pool encryptionAtHost False (asked True))",
    ) in plan

    pool = NodePoolRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-plan-aks",
        cluster_name="aks-plan",
        pool_name="userpool",
        disk_encryption_set_id=des_id,
    )
    assert [(s, o.split(" (")[0]) for s, o in planned(emulator, add_encrypted_node_pool, pool)] == [
        ("Add the node pool", "would create"),
        (verify, "would verify"),
    ]
    assert summary(emulator, add_encrypted_node_pool, pool) == [
        ("Add the node pool", "created"),
        (verify, "verified"),
    ]
    assert summary(emulator, add_encrypted_node_pool, pool, writes=False)[0] == (
        "Add the node pool",
        "unchanged",
    )


def test_data_disk_storage_class(azure_block: str, emulator: Emulator, des_id: str) -> None:
    create_encrypted_aks_cluster(
        AksClusterRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-plan-des",
            location="westeurope",
            cluster_name="aks-disks",
            disk_encryption_set_id=des_id,
        )
    )
    request = DataDiskEncryptionRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-plan-des",
        cluster_name="aks-disks",
        disk_encryption_set_id=des_id,
    )
    step = "Apply the StorageClass"
    assert planned(emulator, encrypt_aks_data_disks, request) == [(step, "would create")]
    assert summary(emulator, encrypt_aks_data_disks, request) == [(step, "created")]
    assert summary(emulator, encrypt_aks_data_disks, request, writes=False) == [(step, "unchanged")]
    premium = request.model_copy(update={"sku_name": "Premium_LRS"})
    assert planned(emulator, encrypt_aks_data_disks, premium) == [
        (step, "would recreate (parameters.skuname: Standard_LRS → Premium_LRS)")
    ]
    assert summary(emulator, encrypt_aks_data_disks, premium) == [(step, "recreated")]


def test_kms_enable(azure_block: str, azure: AzureClients, emulator: Emulator) -> None:
    aks = Cluster(azure, emulator)
    request: EnableKmsRequest = enable(azure_block, aks.key_id)
    plan = planned(emulator, enable_aks_kms_encryption, request)
    identity = "Create a user-assigned managed identity"
    access = "Let the identity encrypt and decrypt with the key"
    key, secrets, verify = (
        "Set the cluster's KMS key",
        "Re-write the Secrets",
        "Verify the cluster's KMS key",
    )
    assert [(s, o.split(" (")[0]) for s, o in plan] == [
        (identity, "would create"),
        (access, "would grant"),
        (key, "would update"),
        (secrets, "would rewrite"),
        (verify, "would verify"),
    ]
    said = dict(plan)
    assert f"azureKeyVaultKms.keyId: (none) → {aks.key_id}" in said[key]
    assert f"tags.byok-kms-key-version: (none) → {aks.key_id}" in said[key]
    assert (
        said[secrets] == f"would rewrite ({len(SECRETS)} Secret(s) under key version {aks.key_id})"
    )
    assert set(aks.sealed_with().values()) == {None}  # nothing encrypted yet

    done = summary(emulator, enable_aks_kms_encryption, request)
    assert done == [
        (identity, "created"),
        (access, "granted"),
        (key, "updated"),
        (secrets, "re-written"),
        (verify, "verified"),
    ]
    again = summary(emulator, enable_aks_kms_encryption, request, writes=False)
    assert {o for s, o in again if s != verify} == {"unchanged"}, again
    assert planned(emulator, enable_aks_kms_encryption, request)[2] == (
        key,
        f"exists, unchanged (KMS key {aks.key_id})",
    )
    new = enable(azure_block, aks.key_id, cluster_name="aks-new", create_if_missing=True)
    assert planned(emulator, enable_aks_kms_encryption, new)[2:4] == [
        (key, f"would create (with KMS key {aks.key_id})"),
        (secrets, f"exists, unchanged (no Secret on an older version than {aks.key_id})"),
    ]


def test_kms_rotation(azure_block: str, azure: AzureClients, emulator: Emulator) -> None:
    aks = Cluster(azure, emulator)
    enable_aks_kms_encryption(enable(azure_block, aks.key_id))
    request: RotateKmsRequest = rotate(azure_block, "plan-rotation")
    new, key = "Create a new key version", "Set the cluster's KMS key"
    secrets, verify = "Re-write the Secrets", "Verify the cluster's KMS key"
    versionless = aks.key_id.rsplit("/", 1)[0]
    plan = planned(emulator, rotate_aks_kms_key, request)
    assert [(s, o.split(" (")[0]) for s, o in plan] == [
        (new, "would create"),
        (key, "would update"),
        (secrets, "would rewrite"),
        (verify, "would verify"),
    ]
    assert f"azureKeyVaultKms.keyId: {aks.key_id} → {versionless}/(new version)" in plan[1][1]
    assert len(aks.versions()) == 1

    assert summary(emulator, rotate_aks_kms_key, request) == [
        (new, "created"),
        (key, "updated"),
        (secrets, "re-written"),
        (verify, "verified"),
    ]
    (made,) = set(aks.versions()) - {aks.key_id}
    assert planned(emulator, rotate_aks_kms_key, request) == [
        (new, "exists, unchanged (made by an earlier run)"),
        (key, f"exists, unchanged (KMS key {made})"),
        (secrets, f"exists, unchanged (no Secret on an older version than {made})"),
        (verify, f"would verify (KMS key {made}, no Secret on an older version)"),
    ]
    again = summary(emulator, rotate_aks_kms_key, request, writes=False)
    assert {o for s, o in again if s != verify} == {"unchanged"}, again
