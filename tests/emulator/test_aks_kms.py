"""KMS etcd encryption of emulated AKS clusters, through the real ContainerServiceClient and
the real kubernetes client: Azure's refusals, Secrets sealed with the key version current at
write time, the two key slots, and the cluster failing when its key cannot be used."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    NetworkRuleSet,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultPatchParameters,
    VaultPatchProperties,
)
from kubernetes.client import ApiException

from clients.aks_kubernetes import core_api
from clients.azure import AzureClients
from emulator.server import Emulator
from tests.helpers import vault_with_key


def kms_cluster(identity_id: str, key_id: str, version: str = "1.33", **kms: Any) -> dict[str, Any]:
    return {
        "location": "westeurope",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}},
        "properties": {
            "kubernetesVersion": version,
            "dnsPrefix": "aks",
            "agentPoolProfiles": [{"name": "system", "mode": "System", "count": 1}],
            "securityProfile": {
                "azureKeyVaultKms": {
                    "enabled": True,
                    "keyId": key_id,
                    "keyVaultNetworkAccess": "Public",
                    **kms,
                }
            },
        },
    }


class Setup:
    """A vault with an RSA key, a user-assigned identity allowed to encrypt/decrypt."""

    def __init__(self, azure: AzureClients, emulator: Emulator) -> None:
        self.azure, self.emulator = azure, emulator
        self.vault, self.key_id = vault_with_key(azure, emulator, "rg", "kv-kms", "kms")
        self.keys = azure.keys(str(self.vault.properties.vault_uri))
        identity = azure.msi().user_assigned_identities.create_or_update(
            "rg", "aks-kms", {"location": "westeurope"}
        )
        self.identity_id, self.principal = str(identity.id), str(identity.principal_id)
        self.clusters = azure.container_service().managed_clusters

    def allow(self, permissions: list[str]) -> None:
        self.azure.keyvault_management().vaults.update_access_policy(
            "rg",
            "kv-kms",
            "add",
            VaultAccessPolicyParameters(
                properties=VaultAccessPolicyProperties(
                    access_policies=[
                        AccessPolicyEntry(
                            tenant_id=self.emulator.identity.tenant_id,
                            object_id=self.principal,
                            permissions=Permissions(keys_property=permissions),
                        )
                    ]
                )
            ),
        )

    def put(self, key_id: str, **kms: Any) -> Any:
        body = kms_cluster(self.identity_id, key_id, **kms)
        return self.clusters.begin_create_or_update("rg", "aks", body)

    def core(self) -> Any:
        kubeconfig = self.clusters.list_cluster_user_credentials("rg", "aks").kubeconfigs[0].value
        return core_api(kubeconfig)

    def assert_failed_on_key_access(self, secret_name: str) -> None:
        """The cluster is Failed with AKS's key access error and the Secret no longer reads."""
        failed = self.clusters.get("rg", "aks")
        assert failed.properties.provisioning_state == "Failed"
        error = failed.properties.status.provisioning_error
        assert error.code == "AzureKeyVaultKmsValidateIdentityPermissionCustomerError"
        with pytest.raises(ApiException) as info:
            self.core().read_namespaced_secret(secret_name, "default")
        assert info.value.status == 500

    def sealed_with(self) -> dict[str, str | None]:
        kube = self.emulator.state.kubernetes
        (cluster,) = kube.clusters.values()
        return kube.sealed_with(cluster)


@pytest.fixture
def setup(azure: AzureClients, emulator: Emulator) -> Setup:
    return Setup(azure, emulator)


def secret(name: str, value: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "stringData": {"v": value}}


def test_refusals(setup: Setup) -> None:
    def refused(key_id: str, **kms: Any) -> str:
        with pytest.raises(HttpResponseError) as info:
            setup.put(key_id, **kms).result()
        assert info.value.status_code == 400
        return f"{info.value.error.code}: {info.value.error.message}"

    assert refused(setup.key_id).startswith(
        "AzureKeyVaultKmsValidateIdentityPermissionCustomerError: The identity does not have "
        "keys encrypt/decrypt permission"
    )
    setup.allow(["encrypt", "decrypt"])
    assert refused(setup.key_id, keyVaultNetworkAccess="Private") == (
        "BadRequest: KeyVault resource ID is empty when KeyVault network access is Private."
    )
    assert "must be empty when keyVaultNetworkAccess is Public" in refused(
        setup.key_id, keyVaultResourceId=setup.vault.id
    )
    versionless = setup.key_id.rsplit("/", 1)[0]
    assert "needs Kubernetes 1.33 or newer" in refused(versionless, version="1.32")
    ec = str(setup.keys.create_ec_key("ec").id)
    assert "is a EC key; KMS needs an RSA key" in refused(ec)
    assert (
        setup.emulator.arm.get(
            f"/subscriptions/{setup.emulator.identity.subscription_id}/resourceGroups/rg/providers/"
            "Microsoft.ContainerService/managedClusters/aks"
        )
        is None
    )
    # a private vault: the identity must also approve AKS's private endpoint into it
    private = {"keyVaultNetworkAccess": "Private", "keyVaultResourceId": setup.vault.id}
    assert refused(versionless, **private) == (
        f"AuthorizationFailed: The client '{setup.principal}' with object id "
        f"'{setup.principal}' does not have authorization to perform action "
        "'Microsoft.KeyVault/vaults/privateEndpointConnectionsApproval/action' over scope "
        f"'{setup.vault.id}' or the scope is invalid."
    )
    # with Key Vault Contributor on the vault, a private vault and a versionless key on 1.33
    setup.emulator.state.grant_role(setup.principal, "Key Vault Contributor", setup.vault.id)
    cluster = setup.put(versionless, **private).result()
    assert cluster.properties.security_profile.azure_key_vault_kms.key_id == versionless


def test_secrets_follow_the_key_slots_and_a_bad_key_fails_the_cluster(setup: Setup) -> None:
    setup.allow(["encrypt", "decrypt"])
    v1 = setup.key_id
    setup.put(v1).result()
    core = setup.core()
    core.create_namespace({"metadata": {"name": "apps"}})
    core.create_namespaced_secret("apps", secret("a", "one"))
    core.create_namespaced_secret("default", secret("b", "two"))
    assert setup.sealed_with() == {"apps/a": v1, "default/b": v1}

    v2 = str(setup.keys.create_rsa_key("kms", size=2048).id)
    setup.put(v2).result()
    core.create_namespaced_secret("apps", secret("c", "three"))
    assert setup.sealed_with() == {"apps/a": v1, "apps/c": v2, "default/b": v1}
    a = core.read_namespaced_secret("a", "apps")
    assert base64.b64decode(a.data["v"]) == b"one"  # the previous slot still opens it
    # an unchanged replace re-writes only what is sealed with another key
    for name, ns in (("a", "apps"), ("c", "apps")):
        core.replace_namespaced_secret(name, ns, core.read_namespaced_secret(name, ns))
    assert setup.sealed_with() == {"apps/a": v2, "apps/c": v2, "default/b": v1}
    page = core.list_secret_for_all_namespaces(limit=2)
    assert [s.metadata.name for s in page.items] == ["a", "c"]
    assert page.metadata._continue
    rest = core.list_secret_for_all_namespaces(limit=2, _continue=page.metadata._continue)
    assert [s.metadata.name for s in rest.items] == ["b"] and not rest.metadata._continue

    # the key in use is disabled: the cluster goes Failed, Secrets cannot be read
    setup.keys.update_key_properties("kms", v2.rsplit("/", 1)[1], enabled=False)
    failed = setup.clusters.get("rg", "aks")
    assert failed.properties.provisioning_state == "Failed"
    assert failed.properties.status.provisioning_error.code == "KeyVaultKeyDisabled"
    with pytest.raises(ApiException) as info:
        core.read_namespaced_secret("a", "apps")
    assert info.value.status == 500 and "disabled" in info.value.body


def test_a_second_rotation_before_re_encryption_leaves_the_cluster_updating(
    setup: Setup,
) -> None:
    setup.allow(["encrypt", "decrypt"])
    setup.put(setup.key_id).result()
    setup.core().create_namespaced_secret("default", secret("a", "one"))
    setup.put(str(setup.keys.create_rsa_key("kms", size=2048).id)).result()
    # Not polled: the operation never ends, and a poller would outlive the test.
    body = kms_cluster(setup.identity_id, str(setup.keys.create_rsa_key("kms", size=2048).id))
    setup.clusters.begin_create_or_update("rg", "aks", body, polling=False)
    for _ in range(5):
        assert setup.clusters.get("rg", "aks").properties.provisioning_state == "Updating"
    with pytest.raises(HttpResponseError, match="AnotherOperationInProgress"):
        setup.put(setup.key_id).result()


def test_the_secret_api_answers_as_kubernetes_does(setup: Setup) -> None:
    setup.allow(["encrypt", "decrypt"])
    setup.put(setup.key_id).result()
    core = setup.core()

    def status(call: Any) -> tuple[int, str]:
        with pytest.raises(ApiException) as info:
            call()
        return info.value.status, info.value.reason

    assert status(lambda: core.create_namespaced_secret("nope", secret("a", "x"))) == (
        404,
        "Not Found",
    )
    created = core.create_namespaced_secret("default", secret("a", "x"))
    assert status(lambda: core.create_namespaced_secret("default", secret("a", "y")))[0] == 409
    bad = {"metadata": {"name": "b"}, "data": {"v": "not base64!"}}
    assert status(lambda: core.create_namespaced_secret("default", bad))[0] == 422
    updated = core.replace_namespaced_secret("a", "default", secret("a", "y"))
    assert updated.metadata.resource_version != created.metadata.resource_version
    stale = secret("a", "z") | {"metadata": {"name": "a", "resourceVersion": "1"}}
    assert status(lambda: core.replace_namespaced_secret("a", "default", stale))[0] == 409
    # an update that changes nothing, on data sealed with the current key, is not written
    same = core.replace_namespaced_secret("a", "default", secret("a", "y"))
    assert same.metadata.resource_version == updated.metadata.resource_version
    core.delete_namespaced_secret("a", "default")
    assert status(lambda: core.read_namespaced_secret("a", "default"))[0] == 404
    assert setup.sealed_with() == {}

    # answers are JSON: a client accepting only protobuf is refused (kubectl lists JSON too:
    # tests/cli/test_kubectl_secrets.py)
    def only_protobuf() -> Any:
        return core.api_client.call_api(
            "/api/v1/secrets",
            "GET",
            header_params={"Accept": "application/vnd.kubernetes.protobuf"},
            auth_settings=["BearerToken"],
        )

    assert status(only_protobuf) == (406, "Not Acceptable")

    def post_protobuf(body: bytes) -> Any:
        return core.api_client.call_api(
            "/api/v1/namespaces/default/secrets",
            "POST",
            header_params={"Content-Type": "application/vnd.kubernetes.protobuf"},
            body=body,
            auth_settings=["BearerToken"],
        )

    assert status(lambda: post_protobuf(b"not protobuf"))[0] == 400
    type_meta = b"\x0a\x02v1\x12\x09ConfigMap"  # runtime.Unknown{typeMeta: v1 ConfigMap}
    config_map = b"k8s\x00\x0a" + bytes([len(type_meta)]) + type_meta
    assert status(lambda: post_protobuf(config_map)) == (415, "Unsupported Media Type")


def test_removed_key_access_fails_the_cluster(setup: Setup) -> None:
    setup.allow(["encrypt", "decrypt"])
    setup.put(setup.key_id).result()
    setup.core().create_namespaced_secret("default", secret("a", "one"))
    setup.azure.keyvault_management().vaults.update_access_policy(
        "rg",
        "kv-kms",
        "remove",
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(
                access_policies=[
                    AccessPolicyEntry(
                        tenant_id=setup.emulator.identity.tenant_id,
                        object_id=setup.principal,
                        permissions=Permissions(keys_property=["encrypt", "decrypt"]),
                    )
                ]
            )
        ),
    )
    setup.assert_failed_on_key_access("a")


def test_a_vault_firewall_blocks_a_public_plugin(setup: Setup) -> None:
    """A public vault must admit all networks (AKS's limitation): a firewall closed under a
    running cluster fails it; a cluster put on such a vault is refused; Private is not."""
    setup.allow(["encrypt", "decrypt"])
    setup.put(setup.key_id).result()
    setup.core().create_namespaced_secret("default", secret("a", "one"))
    firewall = NetworkRuleSet(default_action="Deny", bypass="AzureServices")
    vaults = setup.azure.keyvault_management().vaults
    vaults.update(
        "rg", "kv-kms", VaultPatchParameters(properties=VaultPatchProperties(network_acls=firewall))
    )
    setup.assert_failed_on_key_access("a")
    with pytest.raises(HttpResponseError) as refused:
        setup.put(setup.key_id).result()
    assert refused.value.error.code == "AzureKeyVaultKmsValidateIdentityPermissionCustomerError"
    setup.emulator.state.grant_role(setup.principal, "Key Vault Contributor", setup.vault.id)
    private = setup.put(
        setup.key_id, keyVaultNetworkAccess="Private", keyVaultResourceId=setup.vault.id
    ).result()
    assert private.properties.provisioning_state == "Succeeded"
    assert setup.core().read_namespaced_secret("a", "default").data["v"] == (
        base64.b64encode(b"one").decode()
    )
