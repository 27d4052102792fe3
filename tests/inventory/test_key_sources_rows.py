"""Rows for AKS KMS and node pools, VM host encryption and confidential VMs, and the key
sources (vault or managed HSM, cross-tenant and confidential sets), from Resource Graph rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from byok.aks_kms import TAG_CURRENT, TAG_PREVIOUS, TAG_ROTATED_AT, TAG_ROTATION
from byok.inventory.blast import blast_radius
from byok.inventory.controls import Limits, evaluate
from byok.inventory.discovery import (
    blocking_vms,
    findings,
    key_urls,
    set_ids,
    store_kind,
    vaults_by_uri,
)
from byok.inventory.models import KeyState, Kind, Verdict

SUB = "sub-1"
RG = f"/subscriptions/{SUB}/resourceGroups/rg/providers"
KEY = "https://kv1.vault.azure.net/keys/kms"
AKS_ID = f"{RG}/Microsoft.ContainerService/managedClusters/aks1"
CVM_SET = f"{RG}/Microsoft.Compute/diskEncryptionSets/des-cvm"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def cluster(key_id: str | None, tags: dict[str, str], **props: object) -> dict:
    kms = {"enabled": True, "keyId": key_id} if key_id else {"enabled": False}
    return {
        "id": AKS_ID,
        "type": "microsoft.containerservice/managedclusters",
        "subscriptionId": SUB,
        "tags": tags,
        "properties": {
            "securityProfile": {"azureKeyVaultKms": kms},
            "agentPoolProfiles": [
                {"name": "system", "enableEncryptionAtHost": True},
                {"name": "user"},
            ],
            **props,
        },
    }


def vm(name: str, power: str | None, **security: object) -> dict:
    row: dict = {
        "id": f"{RG}/Microsoft.Compute/virtualMachines/{name}",
        "type": "microsoft.compute/virtualmachines",
        "subscriptionId": SUB,
        "properties": {
            "securityProfile": security,
            "storageProfile": {
                "osDisk": {
                    "managedDisk": {
                        "securityProfile": {
                            "securityEncryptionType": "DiskWithVMGuestState",
                            "diskEncryptionSet": {"id": CVM_SET},
                        }
                    }
                }
            },
        },
    }
    if power:
        row["properties"]["extended"] = {"instanceView": {"powerState": {"code": power}}}
    return row


CVM_DES = {
    "id": CVM_SET,
    "type": "microsoft.compute/diskencryptionsets",
    "subscriptionId": SUB,
    "properties": {
        "activeKey": {"keyUrl": "https://hsm1.managedhsm.azure.net/keys/cvm/v1"},
        "encryptionType": "ConfidentialVmEncryptedWithCustomerKey",
        "federatedClientId": "None",
    },
}


def state(url: str) -> KeyState:
    return KeyState(key_id=url, version=url.rsplit("/", 1)[-1], created=NOW, store_id="vault-id")


def judged(rows: list[dict]) -> dict[tuple[str, str, str], tuple[Verdict, str]]:
    found = [f for row in rows for f in findings(row, set_ids(rows), state, blocking_vms(rows))]
    return {
        (r.resource_id.rsplit("/", 1)[-1], r.part, r.control): (r.verdict, r.rule)
        for r in evaluate(found, Limits(now=NOW))
    }


def test_a_kms_cluster_reports_the_version_in_use_the_previous_one_and_its_pools() -> None:
    tags = {
        TAG_CURRENT: f"{KEY}/v2",
        TAG_PREVIOUS: f"{KEY}/v1",
        TAG_ROTATED_AT: "2026-11-30T10:00:00+00:00",
        TAG_ROTATION: "r2",
    }
    row = cluster(KEY, tags)  # the new experience: a versionless key id
    assert key_urls([row]) == {f"{KEY}/v2"}  # the version in use is read, not the latest
    found = list(findings(row, {}, state))
    pools = {f.resource_id: f.kind for f in found if f.kind == Kind.AKS_NODE_POOL}
    assert pools == {f"{AKS_ID}/agentPools/{p}": Kind.AKS_NODE_POOL for p in ("system", "user")}
    kms = next(f for f in found if f.part == "kms-etcd")
    assert kms.key is not None and kms.key.version == "v2"
    assert kms.encryption_type == "KMS etcd encryption (new experience)"
    assert kms.previous_key_version == f"{KEY}/v1"
    assert kms.rotation == "rotation r2 at 2026-11-30T10:00:00+00:00"
    verdicts = judged([row])
    verdict, rule = verdicts[("aks1", "kms-etcd", "kms-etcd")]
    assert verdict == Verdict.COMPLIANT and f"previous version {KEY}/v1" in rule
    assert ("aks1", "kms-etcd", "customer-key") not in verdicts  # judged by kms-etcd alone
    assert verdicts[("aks1", "kms-etcd", "key-age")][0] == Verdict.COMPLIANT
    assert verdicts[("system", "", "encryption-at-host")][0] == Verdict.COMPLIANT
    assert verdicts[("user", "", "encryption-at-host")][0] == Verdict.NON_COMPLIANT
    # The blast radius of the key reaches the cluster through its KMS.
    (dependent,) = blast_radius(KEY, [row])
    assert (dependent.part, dependent.path) == ("kms-etcd", [f"{KEY}/v2", AKS_ID])


@pytest.mark.parametrize(
    ("key_id", "props", "rule"),
    [
        (None, {}, "KMS etcd encryption is off"),
        (
            f"{KEY}/v1",
            {
                "provisioningState": "Failed",
                "status": {"provisioningError": {"code": "KeyExpired"}},
            },
            "cannot use its KMS key: cluster Failed: KeyExpired",
        ),
    ],
)
def test_kms_off_or_a_failed_cluster_is_not_compliant(
    key_id: str | None, props: dict, rule: str
) -> None:
    verdict, text = judged([cluster(key_id, {}, **props)])[("aks1", "kms-etcd", "kms-etcd")]
    assert verdict == Verdict.NON_COMPLIANT and rule in text


def test_confidential_vms_host_encryption_and_what_blocks_the_sets_rotation() -> None:
    rows = [
        CVM_DES,
        vm("cvm1", "PowerState/running", securityType="ConfidentialVM", encryptionAtHost=True),
        vm("cvm2", "PowerState/deallocated", securityType="ConfidentialVM"),
        vm("cvm3", None, securityType="ConfidentialVM"),  # unknown power state: blocks
    ]
    assert blocking_vms(rows) == {CVM_SET.lower(): [rows[1]["id"], rows[3]["id"]]}
    found = {
        (f.resource_id.rsplit("/", 1)[-1], f.part): f
        for row in rows
        for f in findings(row, set_ids(rows), state, blocking_vms(rows))
    }
    host, disk = found[("cvm1", "host")], found[("cvm1", "os-disk")]
    assert (host.encryption_at_host, host.security_type) == (True, "ConfidentialVM")
    assert disk.customer_key and disk.via == CVM_SET
    assert (disk.encryption_type, disk.security_type) == (
        "ConfidentialVmEncryptedWithCustomerKey",
        "DiskWithVMGuestState",
    )
    des = found[("des-cvm", "")]
    assert des.federated_client_id is None and len(des.blocks_rotation) == 2
    verdicts = judged(rows)
    assert verdicts[("cvm1", "host", "encryption-at-host")][0] == Verdict.COMPLIANT
    assert verdicts[("cvm2", "host", "encryption-at-host")][0] == Verdict.NON_COMPLIANT
    assert ("cvm1", "host", "customer-key") not in verdicts
    rows_out = evaluate([des], Limits(now=NOW))
    assert rows_out[0].blocks_rotation == f"{rows[1]['id']} {rows[3]['id']}"


def test_key_stores_by_row_or_host_and_an_unreadable_cross_tenant_key() -> None:
    hsm = {
        "id": f"{RG}/Microsoft.KeyVault/managedHSMs/hsm1",
        "type": "microsoft.keyvault/managedhsms",
        "properties": {"hsmUri": "https://127.0.0.1:9443/", "tenantId": "t-1"},
    }
    stores = vaults_by_uri([hsm])
    assert store_kind("https://127.0.0.1:9443/keys/k/v", stores["https://127.0.0.1:9443"]) == (
        "managed-hsm"
    )
    assert store_kind("https://h.managedhsm.azure.net/keys/k", None) == "managed-hsm"
    assert store_kind("https://kv.vault.azure.net/keys/k", None) == "key-vault"
    assert store_kind("https://127.0.0.1:8443/keys/k", None) is None
    cross = {
        **CVM_DES,
        "properties": {
            "activeKey": {"keyUrl": f"{KEY}/v1"},
            "encryptionType": "EncryptionAtRestWithCustomerKey",
            "federatedClientId": "app-1",
        },
    }

    def unreadable(url: str) -> KeyState:
        return KeyState(key_id=url, tenant_id="customer-tenant", readable=False)

    (des,) = findings(cross, {}, unreadable)
    assert des.federated_client_id == "app-1"
    rows = {r.control: r for r in evaluate([des], Limits(now=NOW))}
    assert rows["key-age"].verdict == Verdict.NO_ACCESS
    assert "store is in tenant customer-tenant" in rows["vault-recoverable"].rule
    assert (rows["key-expiry"].key_tenant, rows["key-expiry"].federated_client_id) == (
        "customer-tenant",
        "app-1",
    )
