"""The StorageClass that encrypts AKS data disks with a disk encryption set (no Prefect
import)."""

from __future__ import annotations

from typing import Any, Literal

import yaml

from byok.outcomes import Change

Provisioner = Literal["disk.csi.azure.com", "kubernetes.io/azure-disk"]
# What Kubernetes never lets a StorageClass change after creation.
IMMUTABLE_FIELDS = ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode")


def storage_class(
    name: str,
    des_id: str,
    provisioner: Provisioner = "disk.csi.azure.com",
    sku_name: str = "Standard_LRS",
) -> dict[str, Any]:
    """The manifest of seed 002: skuname, kind managed, diskEncryptionSetID."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "byok-flows"}},
        "provisioner": provisioner,
        "parameters": {"skuname": sku_name, "kind": "managed", "diskEncryptionSetID": des_id},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def to_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as `kubectl apply -f` takes it."""
    return yaml.safe_dump(manifest, sort_keys=False)


def differences(
    wanted: dict[str, Any], actual: dict[str, Any]
) -> tuple[list[Change], list[Change]]:
    """(the immutable fields that differ, the other fields that differ: labels), each
    parameter named on its own (`parameters.skuname: Standard_LRS → Premium_LRS`)."""
    immutable = [
        Change(field=f"parameters.{p}", old=have, new=want)
        for p, (have, want) in _pairs(actual.get("parameters"), wanted.get("parameters")).items()
        if have != want
    ] + [
        Change(field=f, old=actual.get(f), new=wanted.get(f))
        for f in IMMUTABLE_FIELDS
        if f != "parameters" and wanted.get(f) != actual.get(f)
    ]
    labels_wanted = (wanted.get("metadata") or {}).get("labels") or {}
    labels_actual = (actual.get("metadata") or {}).get("labels") or {}
    mutable = (
        []
        if labels_actual.items() >= labels_wanted.items()
        else [Change(field="metadata.labels", old=labels_actual, new=labels_wanted)]
    )
    return immutable, mutable


def _pairs(have: Any, want: Any) -> dict[str, tuple[Any, Any]]:
    """Each key of either mapping with its value in `have` and in `want`."""
    have, want = have or {}, want or {}
    return {k: (have.get(k), want.get(k)) for k in {**want, **have}}
