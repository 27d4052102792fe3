"""AKS StorageClasses become findings: Azure disk classes only, judged by their
`diskEncryptionSetID` through the set's key, the default class named, a cluster not read one
`no-access` row, and a set-backed class in its key's blast radius."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from byok.inventory import storage_classes
from byok.inventory.blast import blast_radius
from byok.inventory.controls import Limits, evaluate
from byok.inventory.discovery import set_ids
from byok.inventory.models import Kind, Verdict
from tests.inventory.test_discovery import DES, DES_ID, KEY, RG, SUB, keys

CLUSTER: dict[str, Any] = {
    "id": f"{RG}/Microsoft.ContainerService/managedClusters/aks1",
    "type": "microsoft.containerservice/managedclusters",
    "subscriptionId": SUB,
    "location": "westeurope",
    "properties": {},
}
CLASS_ID = f"{CLUSTER['id']}/storageClasses"


def klass(name: str, provisioner: str, default: bool = False, **params: str) -> dict[str, Any]:
    annotations = {storage_classes.DEFAULT_ANNOTATION: "true"} if default else {}
    return {
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": provisioner,
        "parameters": {"skuname": "Premium_LRS", **params},
    }


CLASSES = [
    klass("managed-csi", "disk.csi.azure.com", default=True),
    klass("byok", "disk.csi.azure.com", diskEncryptionSetID=DES_ID),
    klass("legacy", "kubernetes.io/azure-disk", kind="managed", diskencryptionsetid=DES_ID),
    klass("azurefile-csi", "file.csi.azure.com"),  # not a disk: not reported
]


def judged(classes: storage_classes.Classes | None) -> dict[tuple[str, str], Any]:
    found = storage_classes.findings(CLUSTER, classes, set_ids([DES]), keys)
    rows = evaluate(found, Limits(now=datetime.now(UTC)))
    return {(r.resource_id.removeprefix(f"{CLASS_ID}/"), r.control): r for r in rows}


def test_disk_classes_judged_by_their_set_and_the_default_named() -> None:
    rows = judged(CLASSES)
    assert {name for name, _ in rows} == {"managed-csi", "byok", "legacy"}
    assert {control for _, control in rows} == {"customer-key"}
    default = rows[("managed-csi", "customer-key")]
    assert (default.verdict, default.kind, default.key_id) == (
        Verdict.NON_COMPLIANT,
        Kind.STORAGE_CLASS,
        None,
    )
    assert default.rule == (
        "no diskEncryptionSetID: platform-managed keys (the cluster's default StorageClass)"
    )
    for name in ("byok", "legacy"):  # the parameter's name is case-insensitive
        row = rows[(name, "customer-key")]
        assert (row.verdict, row.key_id, row.rule) == (
            Verdict.COMPLIANT,
            KEY,
            f"customer-managed key {KEY}",
        )
        assert (row.scope, row.region) == (SUB, "westeurope")


def test_a_cluster_not_read_is_one_no_access_row_and_not_read_is_none() -> None:
    reason = "StorageClasses not read: its user credentials refused: AuthorizationFailed"
    ((where, control), row), *rest = judged(reason).items()
    assert rest == [] and (where, control) == ("*", "inventory-access")
    assert (row.verdict, row.rule) == (Verdict.NO_ACCESS, reason)
    assert judged(None) == {}


def test_a_set_backed_class_is_in_its_keys_blast_radius() -> None:
    rows = [DES, CLUSTER]
    paths = {
        tuple(d.path)
        for d in blast_radius(KEY, rows, {CLUSTER["id"].lower(): CLASSES})
        if d.kind is Kind.STORAGE_CLASS
    }
    assert paths == {(KEY, DES_ID, f"{CLASS_ID}/byok"), (KEY, DES_ID, f"{CLASS_ID}/legacy")}
    assert not [d for d in blast_radius(KEY, rows) if d.kind is Kind.STORAGE_CLASS]
