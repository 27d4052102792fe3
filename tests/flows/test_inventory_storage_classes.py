"""AKS StorageClasses in the inventory, read through each cluster's Kubernetes API with its
user credentials: a class backed by a disk encryption set is compliant through the set's key,
the default class without `diskEncryptionSetID` is not (and is named the default), a cluster
whose credentials the flows may not list is one `no-access` row, and the class is in the
key's blast radius (key → set → StorageClass)."""

from __future__ import annotations

import json
from pathlib import Path

from byok.inventory.request import BlastRadiusRequest
from byok.storage_class import storage_class
from clients.azure import AzureClients
from clients.kubernetes import storage_api
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from flows.blast_radius import key_blast_radius
from flows.inventory import InventoryRequest, inventory_customer_managed_keys
from tests.emulator.test_containerservice import cluster as cluster_body
from tests.helpers import des_in_region

GROUP = "rg-img"
PLATFORM_DEFAULT = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "default",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "disk.csi.azure.com",
    "parameters": {"skuname": "StandardSSD_LRS"},
}


def test_storage_classes_verdicts_no_access_and_blast_radius(
    azure_block: str,
    azure: AzureClients,
    emulator: Emulator,
    flow_principal: Principal,
    tmp_path: Path,
) -> None:
    des = des_in_region(azure, emulator, "westeurope", "des-aks", GROUP)
    clusters = azure.container_service().managed_clusters
    aks = clusters.begin_create_or_update(GROUP, "aks-sc", cluster_body(des)).result()
    denied = clusters.begin_create_or_update(GROUP, "aks-denied", cluster_body(des)).result()
    kubeconfig = clusters.list_cluster_user_credentials(GROUP, "aks-sc").kubeconfigs[0].value
    api = storage_api(bytes(kubeconfig))
    api.create_storage_class(storage_class("byok-des", des))
    api.create_storage_class(PLATFORM_DEFAULT)
    # Reader does not list user credentials: on this cluster only, a role that does (the
    # emulator has no "Azure Kubernetes Service Cluster User Role").
    emulator.state.grant_role(flow_principal.object_id, "Contributor", str(aks.id))

    inventory_customer_managed_keys(
        InventoryRequest(azure_credentials_block=azure_block, report_dir=str(tmp_path))
    )
    rows = json.loads((tmp_path / "inventory.json").read_text())
    classes = {
        (r["resource_id"].removeprefix(f"{aks.id}/storageClasses/"), r["control"]): r
        for r in rows
        if r["kind"] == "storage-class"
    }
    key = azure.compute().disk_encryption_sets.get(GROUP, "des-aks").active_key.key_url
    backed = classes[("byok-des", "customer-key")]
    assert (backed["verdict"], backed["key_id"]) == ("compliant", key)
    assert backed["key_store_kind"] == "key-vault" and backed["key_age_days"] == 0
    default = classes[("default", "customer-key")]
    assert (default["verdict"], default["key_id"]) == ("non-compliant", None)
    assert default["rule"] == (
        "no diskEncryptionSetID: platform-managed keys (the cluster's default StorageClass)"
    )
    no_access = classes[(f"{denied.id}/storageClasses/*", "inventory-access")]
    assert no_access["verdict"] == "no-access" and "AuthorizationFailed" in no_access["rule"]
    assert len(classes) == 3  # one control per class, one row for the cluster not read

    dependents = key_blast_radius(
        BlastRadiusRequest(azure_credentials_block=azure_block, key_id=key.rsplit("/", 1)[0])
    ).dependents
    paths = [d.path for d in dependents if d.kind.value == "storage-class"]
    assert paths == [[key, des, f"{aks.id}/storageClasses/byok-des"]]
