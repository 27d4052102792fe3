"""The network rules of Key Vault's data plane, through the real SDK clients: the tests' client
is a public-network caller at 127.0.0.1, refused when public access is disabled
(ForbiddenByConnection) or by the firewall (ForbiddenByFirewall) unless its address is in
ipRules; services using a key (disk encryption sets) are trusted services, let through unless
bypass is None; an AKS KMS private vault is reached through its private endpoint; ARM's key
reads pass whatever the rules."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from azure.mgmt.keyvault.models import (
    IPRule,
    ManagedHsm,
    ManagedHsmProperties,
    ManagedHsmSku,
    NetworkRuleSet,
    VaultPatchParameters,
    VaultPatchProperties,
)

from byok.azure_errors import error_code
from clients.azure import AzureClients
from emulator.server import Emulator
from tests.emulator.test_aks_kms import Setup as KmsSetup
from tests.helpers import grant_wrap, vault_with_key

CONNECTION = (
    "Public network access is disabled and request is not from a trusted service nor via an "
    "approved private link."
)
FIREWALL = "Client address is not authorized and caller is not a trusted service."


def network(
    azure: AzureClients,
    public: str = "Enabled",
    deny: bool = False,
    bypass: str = "AzureServices",
    ips: tuple[str, ...] = (),
    vault: str = "kv-des",
) -> None:
    """Set the vault's publicNetworkAccess and firewall."""
    acls = NetworkRuleSet(
        default_action="Deny" if deny else "Allow",
        bypass=bypass,
        ip_rules=[IPRule(value=ip) for ip in ips],
    )
    azure.keyvault_management().vaults.update(
        "rg",
        vault,
        VaultPatchParameters(
            properties=VaultPatchProperties(public_network_access=public, network_acls=acls)
        ),
    )


def refusal(call: Any) -> tuple[int, str | None, str]:
    """The status, inner code and message of a refused call."""
    with pytest.raises(HttpResponseError) as info:
        call()
    return info.value.status_code, error_code(info.value), str(info.value.error.message)


@pytest.fixture
def vault(azure: AzureClients, emulator: Emulator) -> tuple[Any, str, KeyClient]:
    created, kid = vault_with_key(azure, emulator)
    return created, kid, azure.keys(str(created.properties.vault_uri))


def test_public_access_disabled_refuses_the_client_whatever_the_firewall(
    azure: AzureClients, emulator: Emulator, vault: tuple[Any, str, KeyClient]
) -> None:
    _, kid, keys = vault
    network(azure, public="Disabled", ips=("127.0.0.1",))  # ipRules are not honoured then
    status, code, message = refusal(lambda: keys.get_key("des-key"))
    assert (status, code) == (403, "ForbiddenByConnection")
    principal = emulator.state.service_principal
    assert message == (
        f"{CONNECTION}\r\nCaller: appid={principal.client_id};oid={principal.object_id};"
        f"iss=https://sts.windows.net/{emulator.identity.tenant_id}/\r\n"
        "Vault: kv-des;location=westeurope"
    )
    crypto = azure.crypto(kid)
    assert refusal(lambda: crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32))[1] == (
        "ForbiddenByConnection"
    )
    assert refusal(lambda: keys.create_rsa_key("other", size=2048))[1] == "ForbiddenByConnection"
    network(azure)
    assert keys.get_key("des-key").id == kid


def test_firewall_lets_through_only_addresses_of_its_ip_rules(
    azure: AzureClients, vault: tuple[Any, str, KeyClient]
) -> None:
    _, kid, keys = vault
    network(azure, deny=True, ips=("10.0.0.0/8",))
    status, code, message = refusal(lambda: keys.get_key("des-key"))
    assert (status, code) == (403, "ForbiddenByFirewall")
    assert message.startswith(f"{FIREWALL}\r\nClient address: 127.0.0.1\r\nCaller: appid=")
    assert message.endswith("\r\nVault: kv-des;location=westeurope")
    network(azure, deny=True, ips=("127.0.0.1/32",))
    assert keys.get_key("des-key").id == kid
    network(azure)
    assert keys.get_key("des-key").id == kid


def test_disk_encryption_set_reaches_its_key_as_a_trusted_service(
    azure: AzureClients, emulator: Emulator, vault: tuple[Any, str, KeyClient]
) -> None:
    _, kid, keys = vault
    sets = azure.compute().disk_encryption_sets

    def put(key_url: str) -> Any:
        body = {
            "location": "westeurope",
            "identity": {"type": "SystemAssigned"},
            "properties": {"activeKey": {"keyUrl": key_url}},
        }
        return sets.begin_create_or_update("rg", "des", body).result()

    des = put(kid)
    grant_wrap(azure, emulator, "rg", "kv-des", des.identity.principal_id)
    v2, v3 = (str(keys.create_rsa_key("des-key", size=2048).id) for _ in range(2))
    # private vault, trusted services bypass (the default): the set still uses its key
    network(azure, public="Disabled")
    assert put(v2).active_key.key_url == v2
    # ... unless trusted services may not bypass the rules
    network(azure, public="Disabled", bypass="None")
    status, code, message = refusal(lambda: put(v3))
    assert (status, code) == (400, "ForbiddenByConnection")
    assert message == (
        f"Unable to access key vault resource '{v3}': vault 'kv-des': public network access "
        "is disabled and trusted services may not bypass it."
    )
    # a firewall letting the client's address but no trusted service through
    network(azure, deny=True, bypass="None", ips=("127.0.0.1",))
    assert refusal(lambda: put(v3))[1] == "ForbiddenByFirewall"
    network(azure, deny=True, bypass="AzureServices")
    assert put(v3).active_key.key_url == v3


def test_kms_private_vault_is_reached_through_its_private_endpoint(
    azure: AzureClients, emulator: Emulator
) -> None:
    setup = KmsSetup(azure, emulator)
    setup.allow(["encrypt", "decrypt"])
    emulator.state.grant_role(setup.principal, "Key Vault Contributor", setup.vault.id)
    network(azure, public="Disabled", vault="kv-kms")
    assert refusal(lambda: setup.keys.get_key("kms"))[1] == "ForbiddenByConnection"
    private = {"keyVaultNetworkAccess": "Private", "keyVaultResourceId": setup.vault.id}
    assert setup.put(setup.key_id, **private).result().provisioning_state == "Succeeded"
    setup.core().create_namespaced_secret(
        "default", {"metadata": {"name": "s"}, "stringData": {"v": "x"}}
    )
    assert setup.sealed_with() == {"default/s": setup.key_id}


def test_arm_reads_keys_whatever_the_network_rules(
    azure: AzureClients, vault: tuple[Any, str, KeyClient]
) -> None:
    created, kid, keys = vault
    latest = str(keys.create_rsa_key("des-key", size=3072).id)
    network(azure, public="Disabled", deny=True, bypass="None")
    management = azure.keyvault_management().keys
    key = management.get("rg", "kv-des", "des-key")
    assert key.id == f"{created.id}/keys/des-key"
    assert key.properties.key_uri_with_version == latest
    assert (key.properties.kty, key.properties.key_size) == ("RSA", 3072)
    assert key.properties.attributes.enabled is True
    first = management.get_version("rg", "kv-des", "des-key", kid.rsplit("/", 1)[1])
    assert first.properties.key_uri_with_version == kid
    assert first.properties.key_size == 2048
    with pytest.raises(ResourceNotFoundError):
        management.get("rg", "kv-des", "missing")


def test_managed_hsm_data_plane_refuses_when_public_access_is_disabled(
    azure: AzureClients, emulator: Emulator
) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    hsms = azure.keyvault_management().managed_hsms

    def put(public: str) -> ManagedHsm:
        body = ManagedHsm(
            location="westeurope",
            sku=ManagedHsmSku(family="B", name="Standard_B1"),
            properties=ManagedHsmProperties(
                tenant_id=emulator.identity.tenant_id,
                initial_admin_object_ids=[emulator.state.service_principal.object_id],
                public_network_access=public,
            ),
        )
        return hsms.begin_create_or_update("rg", "hsm1", body).result()

    uri = str(put("Disabled").properties.hsm_uri)
    keys = azure.keys(uri)
    status, code, message = refusal(lambda: keys.get_key("k"))
    assert (status, code) == (403, "ForbiddenByConnection")
    assert message.startswith(CONNECTION) and message.endswith("Vault: hsm1;location=westeurope")
    put("Enabled")
    # past the network rules: the HSM's own answer (not activated yet)
    assert refusal(lambda: keys.get_key("k"))[1] != "ForbiddenByConnection"
