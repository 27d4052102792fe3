"""Key Vault through the real KeyClient and CryptographyClient: challenge authentication,
keys, rotation, wrap/unwrap, access policies and RBAC with propagation delay."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyType
from azure.keyvault.keys.crypto import KeyWrapAlgorithm

from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from tests.helpers import arm_request, vault_parameters

CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"


@pytest.fixture
def vault_url(azure: AzureClients, emulator: Emulator) -> str:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    vault = (
        azure.keyvault_management()
        .vaults.begin_create_or_update("rg", "kv1", vault_parameters(emulator))
        .result()
    )
    return str(vault.properties.vault_uri)


def test_challenge_then_create_get_rotate(
    azure: AzureClients, emulator: Emulator, vault_url: str
) -> None:
    keys = azure.keys(vault_url)
    created = keys.create_rsa_key("k1", size=3072)
    first = emulator.requests.find("POST", r"/keys/k1/create$")
    assert [r.status for r in first] == [401, 200]  # challenge, then with the token
    assert created.key_type == KeyType.rsa and len(created.key.n) == 384
    assert created.id.startswith(vault_url + "keys/k1/")
    rotated = keys.rotate_key("k1")
    assert rotated.properties.version != created.properties.version
    versions = {p.version for p in keys.list_properties_of_key_versions("k1")}
    assert versions == {created.properties.version, rotated.properties.version}
    assert keys.get_key("k1").properties.version == rotated.properties.version
    assert keys.get_key("k1", created.properties.version).key.n == created.key.n


def test_wrap_unwrap_round_trip(azure: AzureClients, vault_url: str, emulator: Emulator) -> None:
    key = azure.keys(vault_url).create_rsa_key("kek", size=2048)
    crypto = azure.crypto(key.id)
    dek = os.urandom(32)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
    assert wrapped.encrypted_key != dek and len(wrapped.encrypted_key) == 256
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek
    assert emulator.requests.find("POST", r"/unwrapkey$")[-1].status == 200


def test_imported_key_unwraps_what_its_public_half_wrapped(
    azure: AzureClients, vault_url: str
) -> None:
    from azure.keyvault.keys import JsonWebKey
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = private.private_numbers()

    def b(v: int) -> bytes:
        return v.to_bytes((v.bit_length() + 7) // 8, "big")

    jwk = JsonWebKey(
        kty="RSA",
        n=b(n.public_numbers.n),
        e=b(n.public_numbers.e),
        d=b(n.d),
        p=b(n.p),
        q=b(n.q),
        dp=b(n.dmp1),
        dq=b(n.dmq1),
        qi=b(n.iqmp),
        key_ops=["wrapKey", "unwrapKey"],
    )
    imported = azure.keys(vault_url).import_key("imported", jwk)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    wrapped = private.public_key().encrypt(b"k" * 32, oaep)
    result = azure.crypto(imported.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
    assert result.key == b"k" * 32


def test_ec_keys_exist_but_cannot_wrap(azure: AzureClients, vault_url: str) -> None:
    key = azure.keys(vault_url).create_ec_key("ec1", curve="P-256")
    assert key.key_type == KeyType.ec
    with pytest.raises(HttpResponseError) as info:
        azure.crypto(key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep, b"x" * 256)
    assert info.value.status_code in (400, 403)


def test_missing_key_is_404(azure: AzureClients, vault_url: str) -> None:
    with pytest.raises(ResourceNotFoundError):
        azure.keys(vault_url).get_key("absent")


def test_deleted_key_is_recoverable_and_purge_protected(
    azure: AzureClients, vault_url: str
) -> None:
    keys = azure.keys(vault_url)
    keys.create_rsa_key("gone")
    keys.begin_delete_key("gone").result()
    with pytest.raises(ResourceNotFoundError):
        keys.get_key("gone")
    with pytest.raises(HttpResponseError) as info:
        keys.purge_deleted_key("gone")
    assert info.value.status_code == 403
    keys.begin_recover_deleted_key("gone").result()
    assert keys.get_key("gone").name == "gone"


def test_access_policy_limits_operations(azure: AzureClients, emulator: Emulator) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    vault = (
        azure.keyvault_management()
        .vaults.begin_create_or_update(
            "rg", "kv-limited", vault_parameters(emulator, key_permissions=["get", "list"])
        )
        .result()
    )
    with pytest.raises(HttpResponseError) as info:
        azure.keys(str(vault.properties.vault_uri)).create_rsa_key("k1")
    assert info.value.status_code == 403
    assert "does not have keys create permission" in str(info.value)


def test_vault_rules(azure: AzureClients, emulator: Emulator) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.properties.enable_purge_protection = False
    with pytest.raises(HttpResponseError) as info:
        azure.keyvault_management().vaults.begin_create_or_update("rg", "kv-np", params).result()
    assert "enablePurgeProtection" in str(info.value)
    with pytest.raises(HttpResponseError) as info:
        azure.keyvault_management().vaults.begin_create_or_update(
            "rg", "1-bad-name", vault_parameters(emulator)
        ).result()
    assert "VaultNameNotValid" in str(info.value)


def test_vaults_default_to_rbac_on_current_api_versions(
    azure: AzureClients, emulator: Emulator
) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    body = {
        "location": "westeurope",
        "properties": {
            "tenantId": emulator.identity.tenant_id,
            "sku": {"family": "A", "name": "standard"},
        },
    }
    new = arm_request(
        emulator,
        azure,
        "PUT",
        "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-new",
        body,
        api_version="2026-05-15",
    )
    old = arm_request(
        emulator,
        azure,
        "PUT",
        "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-old",
        body,
        api_version="2024-11-01",
    )
    assert new.json()["properties"]["enableRbacAuthorization"] is True
    assert old.json()["properties"]["enableRbacAuthorization"] is False
    assert new.json()["properties"]["enableSoftDelete"] is True


def test_rbac_grant_takes_effect_after_propagation(azure: AzureClients, emulator: Emulator) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    vault = (
        azure.keyvault_management()
        .vaults.begin_create_or_update("rg", "kv-rbac", vault_parameters(emulator, rbac=True))
        .result()
    )
    me = emulator.state.service_principal.object_id
    officer = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
    emulator.faults.add(Fault("delayed-effect", effect="access-grant", seconds=1.0))
    azure.authorization().role_assignments.create(
        vault.id,
        str(uuid.uuid4()),
        {
            "role_definition_id": f"{vault.id}/providers/Microsoft.Authorization/roleDefinitions/"
            f"{officer}",
            "principal_id": me,
        },
    )
    keys = azure.keys(str(vault.properties.vault_uri))
    with pytest.raises(HttpResponseError) as info:
        keys.create_rsa_key("k1")
    assert "ForbiddenByRbac" in str(info.value)
    time.sleep(1.1)
    assert keys.create_rsa_key("k1").name == "k1"


def test_role_assignment_for_an_unseen_principal_fails(
    azure: AzureClients, emulator: Emulator
) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    emulator.faults.add(Fault("delayed-effect", effect="principal-visible", seconds=30))
    identity = azure.msi().user_assigned_identities.create_or_update(
        "rg", "id1", {"location": "westeurope"}
    )
    scope = f"/subscriptions/{emulator.identity.subscription_id}/resourceGroups/rg"
    with pytest.raises(HttpResponseError) as info:
        azure.authorization().role_assignments.create(
            scope,
            str(uuid.uuid4()),
            {
                "role_definition_id": f"{scope}/providers/Microsoft.Authorization/"
                f"roleDefinitions/{CRYPTO_SERVICE_ENCRYPTION_USER}",
                "principal_id": identity.principal_id,
            },
        )
    assert "PrincipalNotFound" in str(info.value)


def test_role_definition_lookup_by_name(azure: AzureClients, emulator: Emulator) -> None:
    scope = f"/subscriptions/{emulator.identity.subscription_id}"
    found = list(
        azure.authorization().role_definitions.list(
            scope, filter="roleName eq 'Key Vault Crypto Service Encryption User'"
        )
    )
    assert [d.name for d in found] == [CRYPTO_SERVICE_ENCRYPTION_USER]


def test_access_policy_add_and_remove(
    azure: AzureClients, emulator: Emulator, vault_url: str
) -> None:
    from azure.mgmt.keyvault.models import (
        AccessPolicyEntry,
        Permissions,
        VaultAccessPolicyParameters,
        VaultAccessPolicyProperties,
    )

    other = str(uuid.uuid4())

    def update(kind: str, perms: list[str]) -> None:
        azure.keyvault_management().vaults.update_access_policy(
            "rg",
            "kv1",
            kind,
            VaultAccessPolicyParameters(
                properties=VaultAccessPolicyProperties(
                    access_policies=[
                        AccessPolicyEntry(
                            tenant_id=emulator.identity.tenant_id,
                            object_id=other,
                            permissions=Permissions(keys_property=perms),
                        )
                    ]
                )
            ),
        )

    update("add", ["get", "wrapKey"])
    update("add", ["unwrapKey", "get"])
    vault = azure.keyvault_management().vaults.get("rg", "kv1")
    entry = next(p for p in vault.properties.access_policies if p.object_id == other)
    assert sorted(entry.permissions.keys_property) == ["get", "unwrapKey", "wrapKey"]
    update("remove", ["get", "wrapKey", "unwrapKey"])
    vault = azure.keyvault_management().vaults.get("rg", "kv1")
    assert all(p.object_id != other for p in vault.properties.access_policies)


def make_vault(azure: AzureClients, emulator: Emulator, name: str, **properties: object) -> str:
    """A vault with `properties` set on the SDK model; returns its URI."""
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    params = vault_parameters(emulator)
    for attribute, value in properties.items():
        setattr(params.properties, attribute, value)
    vault = azure.keyvault_management().vaults.begin_create_or_update("rg", name, params).result()
    return str(vault.properties.vault_uri)


def test_deleted_vault_lifecycle(azure: AzureClients, emulator: Emulator) -> None:
    vaults = azure.keyvault_management().vaults
    uri = make_vault(azure, emulator, "kv-life", enable_purge_protection=None)
    kid = azure.keys(uri).create_rsa_key("k").id
    vaults.delete("rg", "kv-life")

    deleted = [v.name for v in vaults.list_deleted()]
    assert deleted == ["kv-life"]
    shown = vaults.get_deleted("kv-life", "westeurope")
    assert shown.properties.vault_id.endswith("/vaults/kv-life")
    assert shown.properties.purge_protection_enabled is False
    with pytest.raises(HttpResponseError) as info:  # the name is held while deleted
        make_vault(azure, emulator, "kv-life")
    assert (info.value.status_code, info.value.error.code) == (409, "ConflictError")
    assert "already exists in deleted state" in info.value.error.message

    recovered = make_vault(
        azure, emulator, "kv-life", create_mode="recover", enable_purge_protection=None
    )
    assert recovered == uri and azure.keys(uri).get_key("k").id == kid
    assert list(vaults.list_deleted()) == []

    vaults.delete("rg", "kv-life")
    vaults.begin_purge_deleted("kv-life", "westeurope").result()
    assert list(vaults.list_deleted()) == []
    fresh = make_vault(azure, emulator, "kv-life")
    assert [k.name for k in azure.keys(fresh).list_properties_of_keys()] == []


def test_recovering_a_vault_that_is_not_deleted_is_refused(
    azure: AzureClients, emulator: Emulator
) -> None:
    with pytest.raises(HttpResponseError) as info:
        make_vault(azure, emulator, "kv-never", create_mode="recover")
    assert info.value.error.code == "SoftDeletedVaultDoesNotExist"


def test_purge_protected_deleted_vault_cannot_be_purged(
    azure: AzureClients, emulator: Emulator
) -> None:
    make_vault(azure, emulator, "kv-held")
    vaults = azure.keyvault_management().vaults
    vaults.delete("rg", "kv-held")
    with pytest.raises(HttpResponseError) as info:
        vaults.begin_purge_deleted("kv-held", "westeurope").result()
    assert info.value.error.message == "Operation 'DeletedVaultPurge' is not allowed."
    assert vaults.get_deleted("kv-held", "westeurope").properties.purge_protection_enabled


@pytest.mark.parametrize(
    ("properties", "level", "days"),
    [
        ({}, "Recoverable", 90),
        ({"enable_purge_protection": None}, "Recoverable+Purgeable", 90),
        (
            {"enable_purge_protection": None, "soft_delete_retention_in_days": 7},
            "CustomizedRecoverable+Purgeable",
            7,
        ),
    ],
)
def test_key_recovery_level_follows_the_vault(
    azure: AzureClients, emulator: Emulator, properties: dict, level: str, days: int
) -> None:
    key = azure.keys(make_vault(azure, emulator, "kv-level", **properties)).create_rsa_key("k")
    assert (key.properties.recovery_level, key.properties.recoverable_days) == (level, days)


@pytest.mark.parametrize("kty", ["RSA-HSM", "EC-HSM"])
def test_hardware_keys_need_a_premium_vault(
    azure: AzureClients, emulator: Emulator, kty: str
) -> None:
    from azure.mgmt.keyvault.models import Sku

    standard = azure.keys(make_vault(azure, emulator, "kv-std"))
    with pytest.raises(HttpResponseError) as info:
        standard.create_key("hsm", kty)
    assert (info.value.status_code, info.value.error.code) == (400, "BadParameter")
    assert info.value.error.message == "Hardware key operation not allowed on standard vault."
    assert [k.name for k in standard.list_properties_of_keys()] == []
    premium = azure.keys(
        make_vault(azure, emulator, "kv-prem", sku=Sku(family="A", name="premium"))
    )
    assert premium.create_key("hsm", kty).key_type == kty


def test_rotation_policy_default_set_and_rules(azure: AzureClients, vault_url: str) -> None:
    from azure.keyvault.keys import (
        KeyRotationLifetimeAction,
        KeyRotationPolicy,
        KeyRotationPolicyAction,
    )

    keys = azure.keys(vault_url)
    keys.create_rsa_key("rotated", size=2048)
    default = keys.get_key_rotation_policy("rotated")
    assert [(a.action, a.time_before_expiry) for a in default.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, "P30D")
    ]
    rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")
    keys.update_key_rotation_policy(
        "rotated", KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P90D")
    )
    stored = keys.get_key_rotation_policy("rotated")
    assert stored.expires_in == "P90D"
    assert [(a.action, a.time_after_create) for a in stored.lifetime_actions] == [
        (KeyRotationPolicyAction.rotate, "P30D")
    ]
    too_soon = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P3D")
    too_late = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P85D")
    before = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P30D")
    for policy, rule in [
        (KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P10D"), "at least 28 days"),
        (KeyRotationPolicy(lifetime_actions=[too_soon], expires_in="P90D"), "at least 7 days"),
        (KeyRotationPolicy(lifetime_actions=[too_late], expires_in="P90D"), "7 days before"),
        (KeyRotationPolicy(lifetime_actions=[before]), "needs the policy's expiryTime"),
    ]:
        with pytest.raises(HttpResponseError, match=rule) as info:
            keys.update_key_rotation_policy("rotated", policy)
        assert info.value.status_code == 400


DAY = 86400


def test_policy_rotates_on_the_emulator_clock(
    azure: AzureClients, emulator: Emulator, vault_url: str
) -> None:
    """Rotate 30 days after creation, versions expiring after 90 days: nothing before the
    trigger; then one version per period, each created when it was due; the admin API moves
    the clock."""
    from azure.keyvault.keys import (
        KeyRotationLifetimeAction,
        KeyRotationPolicy,
        KeyRotationPolicyAction,
    )

    keys = azure.keys(vault_url)
    first = keys.create_rsa_key("auto", size=2048)
    rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")
    keys.update_key_rotation_policy(
        "auto", KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P90D")
    )
    clock = emulator.state.keyvault.clock  # type: ignore[union-attr]
    clock.advance(29 * DAY)
    assert keys.get_key("auto").properties.version == first.properties.version
    answer = requests.post(
        f"{emulator.base_url}/_emulator/clock",
        json={"advance_seconds": 63 * DAY},  # day 92: rotations due on days 30, 60 and 90
        headers={"Authorization": f"Bearer {emulator.admin_token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["offset_seconds"] == 92 * DAY
    backwards = requests.post(
        f"{emulator.base_url}/_emulator/clock",
        json={"advance_seconds": -1},
        headers={"Authorization": f"Bearer {emulator.admin_token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
    assert backwards.status_code == 400
    assert "must be a number ≥ 0" in backwards.json()["error"]["message"]
    versions = sorted(
        keys.list_properties_of_key_versions("auto"), key=lambda p: p.created_on.timestamp()
    )
    start = first.properties.created_on.timestamp()
    assert [round((v.created_on.timestamp() - start) / DAY) for v in versions] == [0, 30, 60, 90]
    assert versions[0].expires_on is None
    assert [round((v.expires_on.timestamp() - start) / DAY) for v in versions[1:]] == [
        120,
        150,
        180,
    ]
    assert keys.get_key("auto").properties.version == versions[-1].version


def test_rotate_before_expiry(azure: AzureClients, emulator: Emulator, vault_url: str) -> None:
    """A version expiring after 60 days, rotated 20 days before: a new version on day 40."""
    from azure.keyvault.keys import (
        KeyRotationLifetimeAction,
        KeyRotationPolicy,
        KeyRotationPolicyAction,
    )

    keys = azure.keys(vault_url)
    first = keys.create_rsa_key("exp", size=2048)
    rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P20D")
    keys.update_key_rotation_policy(
        "exp", KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P60D")
    )
    made = keys.rotate_key("exp")  # rotated by hand: expires as the policy says
    start = made.properties.created_on.timestamp()
    assert round((made.properties.expires_on.timestamp() - start) / DAY) == 60
    clock = emulator.state.keyvault.clock  # type: ignore[union-attr]
    clock.advance(39 * DAY)
    assert keys.get_key("exp").properties.version == made.properties.version
    clock.advance(2 * DAY)
    latest = keys.get_key("exp").properties
    assert latest.version not in (made.properties.version, first.properties.version)
    assert round((latest.created_on.timestamp() - start) / DAY) == 40
