"""AKS StorageClasses: the Azure disk classes a cluster's Kubernetes API lists, each judged by
its `diskEncryptionSetID` parameter (without one, the disks it provisions get platform-managed
keys: https://learn.microsoft.com/azure/aks/azure-disk-customer-managed-keys)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from byok.inventory.discovery import KeyLookup, Row, via_set
from byok.inventory.models import Finding, Kind

# The CSI driver and the in-tree provisioner it replaced; other classes (Azure Files, …) are
# not Azure disks.
PROVISIONERS = ("disk.csi.azure.com", "kubernetes.io/azure-disk")
# https://kubernetes.io/docs/tasks/administer-cluster/change-default-storage-class/
DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
DEFAULT_NOTE = "the cluster's default StorageClass"

# A cluster's StorageClasses (as the Kubernetes API serializes them), or why they could not be
# read.
Classes = Sequence[Mapping[str, Any]] | str


def class_id(cluster_id: str, name: str) -> str:
    """The id a StorageClass is reported under: its cluster's id and its name."""
    return f"{cluster_id}/storageClasses/{name}"


def findings(
    cluster: Row, classes: Classes | None, sets: Mapping[str, Row], keys: KeyLookup
) -> Iterator[Finding]:
    """One finding per Azure disk StorageClass of the cluster (through its set to its key;
    the default class noted), or one `no-access` finding when they could not be read; none
    when they were not read."""
    base: dict[str, Any] = {
        "kind": Kind.STORAGE_CLASS,
        "scope": cluster["subscriptionId"],
        "region": cluster.get("location") or "",
    }
    if classes is None:
        return
    if isinstance(classes, str):
        yield Finding(**base, resource_id=class_id(cluster["id"], "*"), access=False, note=classes)
        return
    for found in classes:
        if found.get("provisioner") not in PROVISIONERS:
            continue
        meta = found.get("metadata") or {}
        # The CSI driver reads its parameters case-insensitively.
        params = {str(k).lower(): v for k, v in (found.get("parameters") or {}).items()}
        where = {**base, "resource_id": class_id(cluster["id"], meta.get("name", ""))}
        finding = via_set(where, params.get("diskencryptionsetid"), sets, keys)
        if (meta.get("annotations") or {}).get(DEFAULT_ANNOTATION) == "true":
            finding.note = "; ".join(n for n in (DEFAULT_NOTE, finding.note) if n)
        yield finding
