"""Container registries encrypted with a customer-managed key, through the real SDK: the rules
of the ACR doc, automatic rotation, revocation, the vault firewall, identity removal."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerregistry.models import (
    EncryptionProperty,
    IdentityProperties,
    ImportImageParameters,
    ImportSource,
    KeyVaultProperties,
    Registry,
    RegistryUpdateParameters,
    Sku,
    UserIdentityProperties,
)
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    IPRule,
    NetworkRuleSet,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultPatchParameters,
    VaultPatchProperties,
)

from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from tests.helpers import vault_with_key

REGISTRY_TYPE = "microsoft.containerregistry/registries"


def identity(azure: AzureClients, name: str = "acr-id") -> Any:
    return azure.msi().user_assigned_identities.create_or_update(
        "rg", name, {"location": "westeurope"}
    )


def allow(azure: AzureClients, emulator: Emulator, principal: str, kind: str = "add") -> None:
    azure.keyvault_management().vaults.update_access_policy(
        "rg",
        "kv-des",
        kind,
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(
                access_policies=[
                    AccessPolicyEntry(
                        tenant_id=emulator.identity.tenant_id,
                        object_id=principal,
                        permissions=Permissions(keys_property=["get", "wrapKey", "unwrapKey"]),
                    )
                ]
            )
        ),
    )


def registry_body(uai: Any, key_id: str, sku: str = "Premium", **kvp: Any) -> Registry:
    return Registry(
        location="westeurope",
        sku=Sku(name=sku),
        identity=IdentityProperties(
            type="UserAssigned", user_assigned_identities={uai.id: UserIdentityProperties()}
        ),
        encryption=EncryptionProperty(
            status="enabled",
            key_vault_properties=KeyVaultProperties(
                key_identifier=key_id, identity=kvp.get("identity", uai.client_id)
            ),
        ),
    )


@pytest.fixture
def setup(azure: AzureClients, emulator: Emulator) -> tuple[Any, str, Any]:
    """A vault with an RSA key and a user-assigned identity allowed to use it."""
    vault, kid = vault_with_key(azure, emulator)
    uai = identity(azure)
    allow(azure, emulator, uai.principal_id)
    return vault, kid, uai


def create(azure: AzureClients, body: Registry, name: str = "acrbyok1") -> Any:
    return azure.container_registry().registries.begin_create("rg", name, body).result()


def import_probe(azure: AzureClients, name: str = "acrbyok1") -> None:
    azure.container_registry().registries.begin_import_image(
        "rg",
        name,
        ImportImageParameters(
            source=ImportSource(
                registry_uri="mcr.microsoft.com", source_image="hello-world:latest"
            ),
            target_tags=["probe:latest"],
        ),
    ).result()


def test_create_with_versioned_key(azure: AzureClients, emulator: Emulator, setup) -> None:
    _, kid, uai = setup
    registry = create(azure, registry_body(uai, kid))
    assert registry.login_server == "acrbyok1.azurecr.io"
    assert registry.provisioning_state == "Succeeded" and registry.sku.tier == "Premium"
    kvp = registry.encryption.key_vault_properties
    assert (kvp.key_identifier, kvp.versioned_key_identifier) == (kid, kid)
    assert kvp.identity == uai.client_id and kvp.key_rotation_enabled is False
    assigned = registry.identity.user_assigned_identities[uai.id]
    assert (assigned.principal_id, assigned.client_id) == (uai.principal_id, uai.client_id)
    import_probe(azure)
    stored = emulator.arm.get(registry.id)
    assert stored is not None and stored["_repositories"] == {"probe:latest": "hello-world:latest"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"sku": "Standard"}, "CustomerManagedKeyNotSupported"),
        ({"identity": "system"}, "InvalidIdentity"),
        ({"identity": "00000000-0000-0000-0000-000000000000"}, "InvalidIdentity"),
    ],
    ids=["premium-only", "system-at-creation", "unknown-identity"],
)
def test_creation_rules(azure: AzureClients, emulator: Emulator, setup, change, code) -> None:
    _, kid, uai = setup
    with pytest.raises(HttpResponseError, match=code):
        create(azure, registry_body(uai, kid, **change))
    assert not [r for r in emulator.arm.resources.values() if r["type"].lower() == REGISTRY_TYPE]


def test_ec_keys_are_refused(azure: AzureClients, emulator: Emulator, setup) -> None:
    vault, _, uai = setup
    ec = azure.keys(str(vault.properties.vault_uri)).create_ec_key("ec-key")
    with pytest.raises(HttpResponseError, match="InvalidKeyType"):
        create(azure, registry_body(uai, str(ec.id)))


def test_identity_without_key_permissions_is_forbidden(
    azure: AzureClients, emulator: Emulator, setup
) -> None:
    _, kid, _ = setup
    other = identity(azure, "no-access")
    with pytest.raises(HttpResponseError, match="KeyVaultAccessForbidden") as caught:
        create(azure, registry_body(other, kid))
    assert "lacks key permissions get, unwrapkey, wrapkey" in str(caught.value)


def test_grant_takes_effect_after_the_propagation_delay(
    azure: AzureClients, emulator: Emulator
) -> None:
    _, kid = vault_with_key(azure, emulator)
    uai = identity(azure)
    emulator.faults.add(Fault("delayed-effect", effect="access-grant", seconds=0.5))
    allow(azure, emulator, uai.principal_id)
    with pytest.raises(HttpResponseError, match="KeyVaultAccessForbidden"):
        create(azure, registry_body(uai, kid))
    time.sleep(0.5)
    assert create(azure, registry_body(uai, kid)).encryption.status == "enabled"


def test_cmk_only_at_creation_and_never_disabled(
    azure: AzureClients, emulator: Emulator, setup
) -> None:
    _, kid, uai = setup
    registries = azure.container_registry().registries
    plain = registries.begin_create(
        "rg", "acrplain1", Registry(location="westeurope", sku=Sku(name="Premium"))
    ).result()
    assert plain.encryption.status == "disabled"
    with pytest.raises(HttpResponseError, match="CustomerManagedKeyEncryptionNotAllowed"):
        registries.begin_update(
            "rg",
            "acrplain1",
            RegistryUpdateParameters(
                encryption=EncryptionProperty(
                    status="enabled",
                    key_vault_properties=KeyVaultProperties(
                        key_identifier=kid, identity=uai.client_id
                    ),
                )
            ),
        ).result()
    create(azure, registry_body(uai, kid))
    with pytest.raises(HttpResponseError, match="CustomerManagedKeyCannotBeDisabled"):
        registries.begin_update(
            "rg",
            "acrbyok1",
            RegistryUpdateParameters(encryption=EncryptionProperty(status="disabled")),
        ).result()


def test_versionless_key_follows_new_versions(
    azure: AzureClients, emulator: Emulator, setup
) -> None:
    """Picked up once the emulator's clock passes the delay after the version was made
    (Azure: within an hour)."""
    vault, kid, uai = setup
    emulator.arm.types[REGISTRY_TYPE].hooks.auto_rotation_seconds = 3600  # type: ignore[attr-defined]
    versionless = kid.rsplit("/", 1)[0]
    registry = create(azure, registry_body(uai, versionless))
    kvp = registry.encryption.key_vault_properties
    assert kvp.key_rotation_enabled is True and kvp.versioned_key_identifier == kid
    new = azure.keys(str(vault.properties.vault_uri)).create_rsa_key("des-key", size=2048)
    registries = azure.container_registry().registries
    seen = registries.get("rg", "acrbyok1").encryption.key_vault_properties
    assert seen.versioned_key_identifier == kid  # not yet: the registry checks periodically
    emulator.state.keyvault.clock.advance(3500)  # type: ignore[union-attr]
    assert registries.get("rg", "acrbyok1").encryption.key_vault_properties == seen
    emulator.state.keyvault.clock.advance(200)  # type: ignore[union-attr]
    seen = registries.get("rg", "acrbyok1").encryption.key_vault_properties
    assert seen.versioned_key_identifier == new.id and seen.last_key_rotation_timestamp


@pytest.mark.parametrize("revoke", ["remove-access", "disable"])
def test_revoked_access_blocks_data_until_restored(
    azure: AzureClients, emulator: Emulator, setup, revoke: str
) -> None:
    vault, kid, uai = setup
    create(azure, registry_body(uai, kid))
    keys = azure.keys(str(vault.properties.vault_uri))
    version = kid.rsplit("/", 1)[1]
    if revoke == "disable":
        keys.update_key_properties("des-key", version, enabled=False)
    else:
        allow(azure, emulator, uai.principal_id, "remove")
    with pytest.raises(HttpResponseError, match="KeyVaultAccessForbidden"):
        import_probe(azure)
    if revoke == "disable":
        keys.update_key_properties("des-key", version, enabled=True)
    else:
        allow(azure, emulator, uai.principal_id)
    import_probe(azure)


def test_removing_the_identity_encryption_uses_fails(
    azure: AzureClients, emulator: Emulator, setup
) -> None:
    _, kid, uai = setup
    registry = create(azure, registry_body(uai, kid))
    registry.identity = IdentityProperties(type="None")
    with pytest.raises(HttpResponseError) as caught:
        azure.container_registry().registries.begin_create("rg", "acrbyok1", registry).result()
    assert (
        f"Azure resource '{registry.id}' does not have access to identity '{uai.client_id}' "
        "Try forcibly adding the identity to the registry acrbyok1."
    ) in str(caught.value)


def test_firewall_needs_the_trusted_services_bypass(
    azure: AzureClients, emulator: Emulator, setup
) -> None:
    vault, kid, uai = setup
    registries = azure.container_registry().registries
    create(azure, registry_body(uai, kid))
    keys = azure.keys(str(vault.properties.vault_uri))
    new = keys.create_rsa_key("des-key", size=2048)

    def firewall(bypass: str, ips: list[str]) -> None:
        azure.keyvault_management().vaults.update(
            "rg",
            "kv-des",
            VaultPatchParameters(
                properties=VaultPatchProperties(
                    network_acls=NetworkRuleSet(
                        default_action="Deny",
                        bypass=bypass,
                        ip_rules=[IPRule(value=ip) for ip in ips],
                    )
                )
            ),
        )

    def rotate() -> Any:
        return registries.begin_update(
            "rg",
            "acrbyok1",
            RegistryUpdateParameters(
                encryption=EncryptionProperty(
                    status="enabled",
                    key_vault_properties=KeyVaultProperties(key_identifier=new.id),
                )
            ),
        ).result()

    firewall("None", [])
    with pytest.raises(HttpResponseError, match="ForbiddenByFirewall"):
        keys.get_key("des-key")
    with pytest.raises(HttpResponseError, match="does not let trusted services bypass"):
        rotate()
    firewall("AzureServices", ["127.0.0.0/8"])
    assert keys.get_key("des-key").id == new.id
    assert rotate().encryption.key_vault_properties.versioned_key_identifier == new.id


def test_switch_to_the_system_identity(azure: AzureClients, emulator: Emulator, setup) -> None:
    _, kid, uai = setup
    registries = azure.container_registry().registries
    create(azure, registry_body(uai, kid))
    updated = registries.begin_update(
        "rg",
        "acrbyok1",
        RegistryUpdateParameters(
            identity=IdentityProperties(
                type="SystemAssigned, UserAssigned",
                user_assigned_identities={uai.id: UserIdentityProperties()},
            )
        ),
    ).result()
    system = updated.identity.principal_id
    switch = RegistryUpdateParameters(
        encryption=EncryptionProperty(
            status="enabled",
            key_vault_properties=KeyVaultProperties(key_identifier=kid, identity="system"),
        )
    )
    with pytest.raises(HttpResponseError, match=f"principal '{system}'"):
        registries.begin_update("rg", "acrbyok1", switch).result()
    allow(azure, emulator, system)
    switched = registries.begin_update("rg", "acrbyok1", switch).result()
    assert switched.encryption.key_vault_properties.identity == "system"
    unassigned = registries.begin_update(
        "rg",
        "acrbyok1",
        RegistryUpdateParameters(
            identity=IdentityProperties(
                type="SystemAssigned", user_assigned_identities={uai.id: None}
            )
        ),
    ).result()
    assert unassigned.identity.user_assigned_identities is None
    import_probe(azure)


def test_content_trust_is_refused(azure: AzureClients, emulator: Emulator, setup) -> None:
    _, kid, uai = setup
    body = registry_body(uai, kid)
    body.policies = {"trustPolicy": {"type": "Notary", "status": "enabled"}}
    with pytest.raises(HttpResponseError, match="ContentTrustNotSupported"):
        create(azure, body)
