"""The inventory of an AKS cluster whose etcd the KMS flows encrypted and rotated: the KMS key
version in use and the previous one (the flows' cluster tags), the last rotation, encryption
at host per node pool, the cluster in its key's blast radius, and a cluster whose KMS key is
disabled reported as not compliant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from byok.aks_kms import EnableKmsRequest, RotateKmsRequest
from byok.inventory.request import BlastRadiusRequest
from clients.azure import AzureClients
from emulator.server import Emulator
from flows.aks_kms import enable_aks_kms_encryption, rotate_aks_kms_key
from flows.blast_radius import key_blast_radius
from flows.inventory import InventoryRequest, inventory_customer_managed_keys
from tests.emulator.test_containerservice import cluster as cluster_body
from tests.helpers import vault_with_key

KMS = {"secrets_page_size": 10, "secrets_per_second": 1000}


def rows_of(block: str, report: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    inventory_customer_managed_keys(
        InventoryRequest(azure_credentials_block=block, report_dir=str(report))
    )
    rows = json.loads((report / "inventory.json").read_text())
    return {(r["resource_id"].rsplit("/", 1)[-1], r["part"], r["control"]): r for r in rows}


def test_kms_key_versions_host_encryption_and_blast_radius_of_a_cluster(
    azure_block: str, azure: AzureClients, emulator: Emulator, tmp_path: Path
) -> None:
    vault, v1 = vault_with_key(azure, emulator, "rg", "kv-kms", "kms")
    emulator.arm.configure_feature("Microsoft.Compute", "EncryptionAtHost", state="Registered")
    body = cluster_body(None)
    system = body["properties"]["agentPoolProfiles"][0]
    user = {**system, "name": "user", "mode": "User", "enableEncryptionAtHost": True}
    body["properties"]["agentPoolProfiles"].append(user)
    clusters = azure.container_service().managed_clusters
    aks = clusters.begin_create_or_update("rg", "aks", body).result()
    enable_aks_kms_encryption(
        EnableKmsRequest(
            azure_credentials_block=azure_block,
            resource_group="rg",
            cluster_name="aks",
            key_id=v1,
            propagation_timeout_minutes=0.5,
            **KMS,
        )
    )
    v2 = rotate_aks_kms_key(
        RotateKmsRequest(
            azure_credentials_block=azure_block,
            resource_group="rg",
            cluster_name="aks",
            rotation_id="r1",
            **KMS,
        )
    ).key_version

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    found = rows_of(azure_block, first)
    kms = found[("aks", "kms-etcd", "kms-etcd")]
    assert kms["verdict"] == "compliant" and kms["key_version"] == v2.rsplit("/", 1)[-1]
    assert (kms["key_id"], kms["previous_key_version"]) == (v2, v1)
    assert kms["rotation"].startswith("rotation r1 at ")
    assert kms["encryption_type"] == "KMS etcd encryption (legacy experience)"
    assert kms["key_store_kind"] == "key-vault" and kms["key_tenant"] == emulator.identity.tenant_id
    assert found[("aks", "kms-etcd", "key-age")]["verdict"] == "compliant"
    assert found[("system", "", "encryption-at-host")]["verdict"] == "non-compliant"
    assert found[("user", "", "encryption-at-host")]["verdict"] == "compliant"

    dependents = key_blast_radius(
        BlastRadiusRequest(azure_credentials_block=azure_block, key_id=v1.rsplit("/", 1)[0])
    ).dependents
    assert [(d.part, d.path) for d in dependents] == [("kms-etcd", [v2, aks.id])]

    # The key disabled: the cluster goes Failed and the inventory says why.
    keys = azure.keys(str(vault.properties.vault_uri))
    keys.update_key_properties("kms", v2.rsplit("/", 1)[-1], enabled=False)
    failed = rows_of(azure_block, second)[("aks", "kms-etcd", "kms-etcd")]
    assert failed["verdict"] == "non-compliant"
    assert "cluster Failed: KeyVaultKeyDisabled" in failed["rule"]
