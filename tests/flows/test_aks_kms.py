"""KMS etcd encryption flows end to end against the emulator, with the least-privilege
principal: enable (legacy and new experience), rotate with every Secret re-encrypted (proven
by the emulator's record of the key each Secret was sealed with), the two-slot refusal, a
crash in the middle of re-writing Secrets finished by a re-run, and the bad requests refused
before any write."""

from __future__ import annotations

import base64
import threading
import uuid
from typing import Any

from azure.mgmt.keyvault.models import NetworkRuleSet, VaultPatchParameters, VaultPatchProperties

from byok.aks_kms import (
    KEY_VAULT_CONTRIBUTOR,
    KEY_VAULT_CRYPTO_USER,
    EnableKmsRequest,
    RotateKmsRequest,
)
from clients.aks_kubernetes import core_api
from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from flows.aks_kms import enable_aks_kms_encryption, rotate_aks_kms_key
from tests.emulator.test_containerservice import cluster as cluster_body
from tests.flows.refusals import refused, writes
from tests.helpers import FLOW_PRINCIPAL, vault_parameters, vault_with_key

SECRETS = {("apps", f"s{i}"): f"value-{i}" for i in range(5)} | {
    ("default", "d0"): "zero",
    ("default", "d1"): "one",
}


class Cluster:
    """A cluster (no KMS yet) holding `SECRETS`, and a vault with an RSA key."""

    def __init__(
        self, azure: AzureClients, emulator: Emulator, rbac: bool = False, version: str = "1.33"
    ) -> None:
        self.azure, self.emulator = azure, emulator
        self.vault, self.key_id = vault_with_key(azure, emulator, "rg", "kv-kms", "kms", rbac=rbac)
        if rbac:  # the flows' principal makes key versions (README: granted by hand)
            for principal in emulator.state.entra.principals.values():
                if principal.display_name == FLOW_PRINCIPAL:
                    emulator.state.grant_role(
                        principal.object_id, "Key Vault Crypto Officer", self.vault.id
                    )
        self.keys = azure.keys(str(self.vault.properties.vault_uri))
        clusters = azure.container_service().managed_clusters
        clusters.begin_create_or_update("rg", "aks", cluster_body(None, version)).result()
        kubeconfig = clusters.list_cluster_user_credentials("rg", "aks").kubeconfigs[0].value
        self.core = core_api(kubeconfig)
        self.core.create_namespace({"metadata": {"name": "apps"}})
        for (ns, name), value in SECRETS.items():
            self.core.create_namespaced_secret(
                ns, {"metadata": {"name": name}, "stringData": {"v": value}}
            )

    def sealed_with(self) -> dict[str, str | None]:
        kube = self.emulator.state.kubernetes
        (cluster,) = kube.clusters.values()
        return kube.sealed_with(cluster)

    def values(self) -> dict[tuple[str, str], str]:
        return {
            (ns, name): base64.b64decode(
                self.core.read_namespaced_secret(name, ns).data["v"]
            ).decode()
            for ns, name in SECRETS
        }

    def versions(self) -> list[str]:
        return [str(p.id) for p in self.keys.list_properties_of_key_versions("kms")]

    def cluster_writes(self) -> int:
        return len(self.emulator.requests.find("PUT", "managedClusters/aks$"))


def changes(emulator: Emulator) -> int:
    """Writes so far, reading the cluster's user credentials (a POST) aside."""
    return writes(emulator) - len(emulator.requests.find("POST", "listClusterUserCredential"))


def enable(block: str, key_id: str, **overrides: Any) -> EnableKmsRequest:
    values: dict[str, Any] = {
        "azure_credentials_block": block,
        "resource_group": "rg",
        "cluster_name": "aks",
        "key_id": key_id,
        "secrets_page_size": 2,
        "secrets_per_second": 1000,
        "propagation_timeout_minutes": 0.5,
    }
    return EnableKmsRequest(**(values | overrides))


def rotate(block: str, rotation_id: str) -> RotateKmsRequest:
    return RotateKmsRequest(
        azure_credentials_block=block,
        resource_group="rg",
        cluster_name="aks",
        rotation_id=rotation_id,
        secrets_page_size=2,
        secrets_per_second=1000,
    )


def test_enable_then_rotate_re_encrypts_every_secret_and_a_crash_is_finished_by_a_re_run(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    aks = Cluster(azure, emulator)
    v1 = aks.key_id
    assert set(aks.sealed_with().values()) == {None}  # written before KMS: plaintext

    state = enable_aks_kms_encryption(enable(azure_block, v1))
    assert (state.experience, state.key_version, state.previous_key_version) == ("legacy", v1, None)
    assert state.secrets_rewritten == len(SECRETS)
    assert set(aks.sealed_with().values()) == {v1}
    found = azure.container_service().managed_clusters.get("rg", "aks")
    assert found.properties.security_profile.azure_key_vault_kms.key_id == v1
    assert found.identity.type == "UserAssigned"
    cluster_puts = aks.cluster_writes()
    again = enable_aks_kms_encryption(enable(azure_block, v1))
    assert again.secrets_rewritten == 0 and aks.cluster_writes() == cluster_puts

    rotated = rotate_aks_kms_key(rotate(azure_block, "r1"))
    v2 = rotated.key_version
    assert len(aks.versions()) == 2 and v2 != v1
    assert (rotated.previous_key_version, rotated.secrets_rewritten) == (v1, len(SECRETS))
    assert set(aks.sealed_with().values()) == {v2}
    assert aks.values() == SECRETS

    # a crash while re-writing Secrets (apps/s3's answer lost on every try)
    emulator.faults.add(
        Fault("reset-after", method="PUT", path="/namespaces/apps/secrets/s3$", count=None)
    )
    assert rotate_aks_kms_key(rotate(azure_block, "r2"), return_state=True).is_failed()
    emulator.faults.clear()
    v3 = aks.versions()[-1]
    sealed = aks.sealed_with()
    assert [sealed[f"apps/s{i}"] for i in range(5)] == [v3, v3, v3, v3, v2]
    assert sealed["default/d0"] == sealed["default/d1"] == v2

    # another rotation now would drop v2 from the key slots: refused, nothing written
    before = changes(emulator)
    message = refused(rotate_aks_kms_key, rotate(azure_block, "r3").model_dump(mode="json"))
    assert message.startswith(
        "rotation_id = 'r3': 3 Secret(s) of cluster 'aks' may still be sealed with the previous "
        f"key version {v2}"
    )
    assert "finish rotation 'r2' first" in message
    assert changes(emulator) == before and len(aks.versions()) == 3

    finished = rotate_aks_kms_key(rotate(azure_block, "r2"))
    assert len(aks.versions()) == 3  # no second key version for r2
    assert (finished.key_version, finished.previous_key_version) == (v3, v2)
    assert finished.secrets_rewritten == 3
    assert set(aks.sealed_with().values()) == {v3}
    assert aks.values() == SECRETS


def test_new_experience_on_an_rbac_vault_and_a_crash_while_enabling(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    aks = Cluster(azure, emulator, rbac=True)
    versionless = aks.key_id.rsplit("/", 1)[0]
    request = enable(azure_block, versionless, experience="new")
    # a crash while encrypting the existing Secrets: the re-run finishes, granting nothing twice
    emulator.faults.add(
        Fault("reset-after", method="PUT", path="/namespaces/apps/secrets/s1$", count=None)
    )
    assert enable_aks_kms_encryption(request, return_state=True).is_failed()
    emulator.faults.clear()
    assert list(aks.sealed_with().values()).count(None) == 5  # s2-s4, d0, d1
    state = enable_aks_kms_encryption(request)
    assert state.secrets_rewritten == 5
    assert (state.experience, state.key_id, state.key_version) == ("new", versionless, aks.key_id)
    identity = azure.msi().user_assigned_identities.get("rg", "aks-kms")
    roles = [
        str(a.role_definition_id).rsplit("/", 1)[-1]
        for a in azure.authorization().role_assignments.list_for_scope(aks.vault.id)
        if a.principal_id == identity.principal_id
    ]
    assert roles == ["12338af0-0e69-4776-bea7-57ae8d297424"]  # Key Vault Crypto User

    rotated = rotate_aks_kms_key(rotate(azure_block, str(uuid.uuid4())))
    found = azure.container_service().managed_clusters.get("rg", "aks")
    assert found.properties.security_profile.azure_key_vault_kms.key_id == versionless
    assert rotated.key_version == aks.versions()[-1] != aks.key_id
    assert set(aks.sealed_with().values()) == {rotated.key_version}


def test_bad_requests_are_refused_before_any_write(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    aks = Cluster(azure, emulator, version="1.32")
    versionless = aks.key_id.rsplit("/", 1)[0]
    ec_key = str(aks.keys.create_ec_key("ec").id)
    azure.resources().resource_groups.create_or_update("rg-east", {"location": "eastus"})
    params = vault_parameters(emulator)
    params.location = "eastus"
    vaults = azure.keyvault_management().vaults
    east = vaults.begin_create_or_update("rg-east", "kv-east", params).result()
    other = str(azure.keys(str(east.properties.vault_uri)).create_rsa_key("kms", size=2048).id)
    before = changes(emulator)

    def message(**overrides: Any) -> str:
        request = enable(azure_block, overrides.pop("key_id", aks.key_id), **overrides)
        return refused(enable_aks_kms_encryption, request.model_dump(mode="json"))

    # the rules of byok.aks_kms (tests/test_aks_kms_rules.py), as the flow reports them
    assert message(key_id=versionless, experience="new") == (
        "cluster 'aks' kubernetes_version = '1.32': the new KMS experience needs Kubernetes "
        "1.33 or newer"
    )
    assert message(key_id=other).startswith(
        f"key_id = '{other}': its key vault 'kv-east' is in eastus, the cluster in westeurope"
    )
    assert message(key_id=ec_key) == f"key_id = '{ec_key}': is a EC key; KMS needs an RSA key"
    assert message(grant_key_access=False).startswith(
        "identity_name = 'aks-kms': has no encrypt/decrypt permission on key vault 'kv-kms'"
    )
    firewall = NetworkRuleSet(default_action="Deny", bypass="AzureServices")
    vaults.update(
        "rg", "kv-kms", VaultPatchParameters(properties=VaultPatchProperties(network_acls=firewall))
    )
    before = changes(emulator)
    assert message() == (
        "key_vault_network_access = 'Public': key vault 'kv-kms' has a firewall (default "
        "action Deny), which blocks the KMS plugin: allow public access from all networks, or "
        f"use Private with key_vault_resource_id {aks.vault.id}"
    )
    assert changes(emulator) == before


def test_a_rotation_is_refused_before_any_write_when_a_vault_firewall_blocks_the_plugin(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    """A vault closed after KMS was enabled over the public network: a new key version would
    leave the cluster Failed, so the rotation is refused before it makes one."""
    aks = Cluster(azure, emulator)
    enable_aks_kms_encryption(enable(azure_block, aks.key_id))
    versions = aks.versions()

    def firewall(action: str) -> None:
        rules = NetworkRuleSet(default_action=action, bypass="AzureServices")
        patch = VaultPatchParameters(properties=VaultPatchProperties(network_acls=rules))
        azure.keyvault_management().vaults.update("rg", "kv-kms", patch)

    firewall("Deny")
    before = changes(emulator)
    assert refused(rotate_aks_kms_key, rotate(azure_block, "r1").model_dump(mode="json")) == (
        "cluster_name = 'aks': its KMS key vault 'kv-kms' has a firewall (default action Deny), "
        "which blocks the KMS plugin (the cluster reaches it over the public network): allow "
        "public access from all networks, or switch the cluster to Private "
        "(enable-aks-kms-encryption with key_vault_network_access Private)"
    )
    assert changes(emulator) == before
    firewall("Allow")  # to read the key's versions
    assert aks.versions() == versions


def test_two_rotations_at_once_make_one_key_version_and_seal_every_secret_once(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    """Both runs of one rotation wait for each other (`wait_for_other_run`): one new key
    version, the cluster moved once, every Secret sealed with it."""
    aks = Cluster(azure, emulator)
    enable_aks_kms_encryption(enable(azure_block, aks.key_id))
    request = rotate(azure_block, "r1").model_copy(update={"wait_for_other_run": True})
    outcome: dict[int, Any] = {}

    def run(number: int) -> None:
        try:
            outcome[number] = rotate_aks_kms_key(request)
        except Exception as exc:  # reported by the assertion below
            outcome[number] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not [o for o in outcome.values() if isinstance(o, Exception)], outcome
    assert len(aks.versions()) == 2
    v2 = aks.versions()[-1]
    assert outcome[1].key_version == outcome[2].key_version == v2
    assert set(aks.sealed_with().values()) == {v2}
    assert outcome[1].secrets_rewritten + outcome[2].secrets_rewritten == len(SECRETS)
    assert aks.values() == SECRETS


def test_a_private_vault_gets_key_vault_contributor_and_its_resource_id(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    aks = Cluster(azure, emulator, rbac=True)
    azure.keyvault_management().vaults.update(
        "rg",
        "kv-kms",
        VaultPatchParameters(properties=VaultPatchProperties(public_network_access="Disabled")),
    )
    # an identity prepared by hand with key access only (grant_key_access off)
    identity = azure.msi().user_assigned_identities.create_or_update(
        "rg", "aks-kms", {"location": "westeurope"}
    )
    principal = str(identity.principal_id)
    emulator.state.grant_role(principal, "Key Vault Crypto User", aks.vault.id)
    private = {"key_vault_network_access": "Private", "key_vault_resource_id": aks.vault.id}
    before = changes(emulator)

    def message(**overrides: Any) -> str:
        request = enable(azure_block, aks.key_id, **overrides)
        return refused(enable_aks_kms_encryption, request.model_dump(mode="json"))

    assert message() == (
        "key_vault_network_access = 'Public': key vault 'kv-kms' has public network access "
        "disabled: allow public access from all networks, or use Private with "
        f"key_vault_resource_id {aks.vault.id}"
    )
    assert message(key_vault_network_access="Private") == (
        "key_vault_resource_id = None: a private key vault (key_vault_network_access = "
        "Private) needs its resource id"
    )
    assert message(grant_key_access=False, **private) == (
        "identity_name = 'aks-kms': has no Key Vault Contributor on key vault 'kv-kms': with a "
        "private vault AKS approves its private endpoint into the vault as this identity; "
        "grant it, or set grant_key_access"
    )
    assert changes(emulator) == before

    state = enable_aks_kms_encryption(enable(azure_block, aks.key_id, **private))
    assert state.secrets_rewritten == len(SECRETS)
    kms = azure.container_service().managed_clusters.get("rg", "aks")
    kms = kms.properties.security_profile.azure_key_vault_kms
    assert (kms.key_vault_network_access, kms.key_vault_resource_id) == ("Private", aks.vault.id)
    roles = sorted(
        str(a.role_definition_id).rsplit("/", 1)[-1]
        for a in azure.authorization().role_assignments.list_for_scope(aks.vault.id)
        if a.principal_id == principal
    )
    assert roles == sorted([KEY_VAULT_CRYPTO_USER, KEY_VAULT_CONTRIBUTOR])
    assert set(aks.sealed_with().values()) == {aks.key_id}

    # the flow reads the key through ARM, but a new key version is a data-plane write its
    # public-network client cannot send to the private vault: refused, naming vault and rule
    before = changes(emulator)
    message = refused(rotate_aks_kms_key, rotate(azure_block, "r1").model_dump(mode="json"))
    assert message.startswith(
        f"{aks.key_id.rsplit('/', 1)[0]}: new key version refused: ForbiddenByConnection: "
        "Public network access is disabled and request is not from a trusted service nor via "
        "an approved private link."
    )
    assert message.endswith("Vault: kv-kms;location=westeurope")
    latest = azure.keyvault_management().keys.get("rg", "kv-kms", "kms")
    assert (changes(emulator), latest.properties.key_uri_with_version) == (before, aks.key_id)


def test_a_missing_cluster_is_created_with_kms_and_a_lost_answer_is_not_written_again(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    _, key_id = vault_with_key(azure, emulator, "rg", "kv-kms", "kms")
    request = enable(azure_block, key_id, create_if_missing=True, kubernetes_version="1.32")
    assert refused(enable_aks_kms_encryption, enable(azure_block, key_id).model_dump()) == (
        "cluster_name = 'aks': no such cluster in resource group rg (create_if_missing makes "
        "it with KMS on)"
    )
    # every answer to the cluster's PUT lost (a retried step finds the cluster made), then a
    # crash before the Secrets step: the re-run writes neither the cluster nor the identity
    emulator.faults.add(Fault("reset-after", method="PUT", path="managedClusters/aks$", count=None))
    emulator.faults.add(Fault("status", status=403, path="listClusterUserCredential", count=None))
    assert enable_aks_kms_encryption(request, return_state=True).is_failed()
    emulator.faults.clear()
    clusters = azure.container_service().managed_clusters
    assert (
        clusters.get("rg", "aks").properties.security_profile.azure_key_vault_kms.key_id == key_id
    )
    puts = [len(emulator.requests.find("PUT", p)) for p in ("managedClusters/aks$", "/aks-kms$")]

    state = enable_aks_kms_encryption(request)
    assert [
        len(emulator.requests.find("PUT", p)) for p in ("managedClusters/aks$", "/aks-kms$")
    ] == puts
    assert (state.key_version, state.secrets_rewritten) == (key_id, 0)
    found = clusters.get("rg", "aks")
    assert (found.location, found.properties.kubernetes_version) == ("westeurope", "1.32")
    assert list(found.identity.user_assigned_identities) == [
        str(azure.msi().user_assigned_identities.get("rg", "aks-kms").id)
    ]
    core = core_api(clusters.list_cluster_user_credentials("rg", "aks").kubeconfigs[0].value)
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}, "stringData": {"v": "x"}})
    kube = emulator.state.kubernetes
    (cluster,) = kube.clusters.values()
    assert kube.sealed_with(cluster) == {"default/s": key_id}  # sealed from the first Secret


BUSY = (
    "Operation is not allowed: Another operation (Updating) is in progress, please wait for it "
    "to finish before starting a new operation. See https://aka.ms/aks-pending-operation for "
    "more details"
)


def test_a_kms_update_answered_409_is_settled_by_reading_the_cluster(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    aks = Cluster(azure, emulator)
    writes_before = aks.cluster_writes()
    # refused before serving (another operation ran): re-read, still without KMS, written once
    emulator.faults.add(
        Fault(
            "status",
            status=409,
            method="PUT",
            path="managedClusters/aks$",
            code="OperationNotAllowed",
            message=BUSY,
        )
    )
    enable_aks_kms_encryption(enable(azure_block, aks.key_id))
    assert aks.cluster_writes() == writes_before + 2  # the refused PUT, and the write
    # the update served but answered 409 (the cluster busy with this very write): re-read, and
    # since it has the new key version, not written again
    emulator.faults.add(
        Fault(
            "status-after",
            status=409,
            method="PUT",
            path="managedClusters/aks$",
            code="OperationNotAllowed",
            message=BUSY,
        )
    )
    rotated = rotate_aks_kms_key(rotate(azure_block, "r1"))
    assert aks.cluster_writes() == writes_before + 3  # the one PUT, answered 409
    found = azure.container_service().managed_clusters.get("rg", "aks")
    assert found.properties.security_profile.azure_key_vault_kms.key_id == rotated.key_version
    assert set(aks.sealed_with().values()) == {rotated.key_version}
