"""Disk encryption sets on a managed HSM key through the existing flows: the adopted HSM's
RSA-HSM key, the set's identity granted its local role at key scope, re-runs and crashes
leaving one key version and one grant, a refused HSM (not activated, or this tool without
its local roles) before any write, rotation, an AKS cluster on the set, and AKS KMS
refusing an HSM key; a registry created on an HSM key (its identity granted at key scope,
a re-run writing nothing, a refused HSM before any write) and through revoke-and-restore."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from azure.keyvault.administration import KeyVaultRoleScope
from azure.mgmt.containerregistry.models import (
    EncryptionProperty,
    IdentityProperties,
    KeyVaultProperties,
    Registry,
    Sku,
    UserIdentityProperties,
)
from azure.mgmt.keyvault.models import ManagedHsm
from cryptography.hazmat.primitives.asymmetric import rsa

from byok.parameters import parse_request
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from flows.acr import (
    EncryptedRegistryRequest,
    RevokeRestoreRequest,
    create_encrypted_registry,
    revoke_and_restore_registry_key,
)
from flows.aks import AksClusterRequest, create_encrypted_aks_cluster
from flows.aks_kms import EnableKmsRequest, enable_aks_kms_encryption
from flows.disk_encryption_set import (
    DesKeyRotationRequest,
    DiskEncryptionSetRequest,
    DiskEncryptionSetResult,
    prepare_disk_encryption_set,
    rotate_disk_encryption_set_key,
)
from tests.emulator.test_managed_hsm import (
    CRYPTO_USER,
    DEFINITIONS,
    SERVICE_ENCRYPTION_USER,
    access_control,
    activated_hsm,
    create_hsm,
)

CRYPTO_OFFICER = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def wrapping_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


def operator_roles(azure: AzureClients, emulator: Emulator, hsm: ManagedHsm, who: str) -> None:
    """The HSM's administrator (the set-up) grants this tool its local roles."""
    rbac = access_control(azure, emulator, hsm.properties.hsm_uri)
    for role in (CRYPTO_USER, CRYPTO_OFFICER):
        rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, DEFINITIONS + role, who)


@pytest.fixture
def hsm(azure: AzureClients, emulator: Emulator, flow_principal: Principal) -> ManagedHsm:
    """An activated HSM hsm1 (resource group rg, westeurope) this tool may use."""
    found = activated_hsm(azure, emulator, wrapping_keys())
    operator_roles(azure, emulator, found, flow_principal.object_id)
    return found


def request(block: str, **overrides: object) -> DiskEncryptionSetRequest:
    values: dict[str, object] = {
        "azure_credentials_block": block,
        "resource_group": "rg-aks",
        "location": "westeurope",
        "key_store": "managed-hsm",
        "hsm_name": "hsm1",
        "hsm_resource_group": "rg",
        "key_name": "aks-key",
        "key_size": 2048,
        "des_name": "des-aks",
        "propagation_timeout_minutes": 0.5,
    }
    values.update(overrides)
    return DiskEncryptionSetRequest(**values)  # type: ignore[arg-type]


def writes(emulator: Emulator) -> list[str]:
    """The writes served since the log was cleared (token requests aside)."""
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()
        if r.method in WRITES and not r.path.endswith("/token")
    ]


def key_versions(emulator: Emulator, hsm: ManagedHsm, name: str) -> list[Any]:
    port = int(hsm.properties.hsm_uri.rstrip("/").rsplit(":", 1)[1])
    return list(emulator.state.keyvault.vaults[port].keys[name].versions)


def grants(emulator: Emulator, hsm: ManagedHsm, principal: str) -> list[tuple[str, str]]:
    """(scope, role id) of the principal's local role assignments on the HSM."""
    resource = emulator.arm.get(str(hsm.id))
    assert resource is not None
    state = emulator.state.managed_hsm.state(resource)
    return [(a.scope, a.role.id) for a in state.assignments.values() if a.principal_id == principal]


def prepared(block: str) -> DiskEncryptionSetResult:
    return prepare_disk_encryption_set(request(block))


def test_hsm_backed_set_end_to_end_and_a_rerun_writes_nothing(
    azure_block: str, emulator: Emulator, hsm: ManagedHsm
) -> None:
    result = prepared(azure_block)
    des = result.disk_encryption_set
    assert result.vault.kind == "managed-hsm" and result.vault.id == hsm.id
    assert [v.kty for v in key_versions(emulator, hsm, "aks-key")] == ["RSA-HSM"]
    assert result.key.size == 2048 and des.key_url == result.key.id
    assert grants(emulator, hsm, des.principal_id) == [("/keys/aks-key", SERVICE_ENCRYPTION_USER)]
    stored = emulator.arm.get(des.id)
    assert stored is not None
    stored = copy.deepcopy(stored)
    assert stored["properties"]["activeKey"] == {
        "keyUrl": result.key.id,
        "sourceVault": {"id": hsm.id},
    }
    emulator.requests.clear()
    assert prepared(azure_block) == result
    # no create, grant or delete; the set's key is re-applied as it is (the step proving
    # the identity's access, as on a vault) and the set is unchanged
    assert [w for w in writes(emulator) if not w.startswith("PATCH ")] == []
    after = emulator.arm.get(des.id)
    assert after is not None
    assert (after["properties"], after["identity"]) == (stored["properties"], stored["identity"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", r"/keys/aks-key/create$"), ("PUT", r"/keys/aks-key/providers/.*/roleAssignments/")],
    ids=["key", "grant"],
)
def test_lost_answers_then_a_rerun_leave_one_key_version_and_one_grant(
    azure_block: str, emulator: Emulator, hsm: ManagedHsm, method: str, path: str
) -> None:
    lost = emulator.faults.add(Fault("reset-after", method=method, path=path))
    with contextlib.suppress(Exception):  # a crashed run, or one that found its write
        prepared(azure_block)
    result = prepared(azure_block)
    assert len(key_versions(emulator, hsm, "aks-key")) == 1
    principal = result.disk_encryption_set.principal_id
    assert grants(emulator, hsm, principal) == [("/keys/aks-key", SERVICE_ENCRYPTION_USER)]
    assert lost.fired == 1


@pytest.mark.parametrize(
    ("store", "field"), [("managed-hsm", "hsm_name"), ("key-vault", "vault_name")]
)
def test_the_chosen_store_must_be_named(store: str, field: str) -> None:
    values = {"resource_group": "rg", "location": "westeurope", "key_name": "k", "des_name": "d"}
    with pytest.raises(InvalidRequest) as refused:
        parse_request(DiskEncryptionSetRequest, {**values, "key_store": store})
    assert str(refused.value) == f"request.{field} = None: required with key_store {store}"


def test_an_hsm_not_activated_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure: AzureClients, flow_principal: Principal
) -> None:
    create_hsm(azure, emulator)
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="hsm_name = 'hsm1': the managed HSM is not activated"):
        prepared(azure_block)
    assert writes(emulator) == []


def test_this_tool_without_its_local_roles_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    activated_hsm(azure, emulator, wrapping_keys())
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match=r"Managed HSM Crypto User .* and Managed HSM Crypto"):
        prepared(azure_block)
    assert writes(emulator) == []


def test_an_hsm_in_another_region_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, hsm: ManagedHsm
) -> None:
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match=r"^location = 'eastus': .*managed HSM 'hsm1'"):
        prepare_disk_encryption_set(request(azure_block, location="eastus"))
    assert writes(emulator) == []


def test_rotation_of_an_hsm_backed_set_makes_one_version(
    azure_block: str, emulator: Emulator, hsm: ManagedHsm
) -> None:
    before = prepared(azure_block)
    rotation = DesKeyRotationRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-aks",
        des_name="des-aks",
        timeout_minutes=0.5,
        poll_seconds=0.05,
        rotation_id="r1",
    )
    rotated = rotate_disk_encryption_set_key(rotation)
    assert rotated.key_url != before.key.id
    assert rotated.key_url.startswith(before.key.versionless_id + "/")
    assert [v.kty for v in key_versions(emulator, hsm, "aks-key")] == ["RSA-HSM", "RSA-HSM"]
    assert rotate_disk_encryption_set_key(rotation).key_url == rotated.key_url
    assert len(key_versions(emulator, hsm, "aks-key")) == 2


def test_aks_cluster_on_an_hsm_backed_set_and_kms_refuses_an_hsm_key(
    azure_block: str, emulator: Emulator, hsm: ManagedHsm
) -> None:
    des = prepared(azure_block)
    cluster = create_encrypted_aks_cluster(
        AksClusterRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-aks",
            location="westeurope",
            cluster_name="aks1",
            disk_encryption_set_id=des.disk_encryption_set.id,
            propagation_timeout_minutes=0.5,
        )
    )
    stored = emulator.arm.get(cluster.id)
    assert stored is not None
    assert stored["properties"]["diskEncryptionSetID"] == des.disk_encryption_set.id

    emulator.requests.clear()
    kms = EnableKmsRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-aks",
        cluster_name="aks1",
        key_id=des.key.id,
        propagation_timeout_minutes=0.5,
    )
    with pytest.raises(InvalidRequest, match=r"key_id = .*AKS KMS etcd encryption takes a key"):
        enable_aks_kms_encryption(kms)
    assert writes(emulator) == []


def test_revoke_and_restore_of_a_registry_on_an_hsm_key(
    azure_block: str, emulator: Emulator, azure: AzureClients, hsm: ManagedHsm
) -> None:
    """Registries take Managed HSM keys (learn.microsoft.com/azure/container-registry/
    tutorial-customer-managed-keys): the flows find the key's HSM and grant at key scope."""
    uri = hsm.properties.hsm_uri
    rbac = access_control(azure, emulator, uri)
    me = emulator.state.service_principal.object_id
    rbac.create_role_assignment(KeyVaultRoleScope.GLOBAL, DEFINITIONS + CRYPTO_USER, me)
    key = azure.keys(uri).create_rsa_key("acr-key", size=2048, hardware_protected=True)
    azure.resources().resource_groups.create_or_update("rg-acr", {"location": "westeurope"})
    uai = azure.msi().user_assigned_identities.create_or_update(
        "rg-acr", "acr-id", {"location": "westeurope"}
    )
    rbac.create_role_assignment(
        "/keys/acr-key", DEFINITIONS + SERVICE_ENCRYPTION_USER, str(uai.principal_id)
    )
    azure.container_registry().registries.begin_create(
        "rg-acr",
        "acrhsm1",
        Registry(
            location="westeurope",
            sku=Sku(name="Premium"),
            identity=IdentityProperties(
                type="UserAssigned", user_assigned_identities={uai.id: UserIdentityProperties()}
            ),
            encryption=EncryptionProperty(
                status="enabled",
                key_vault_properties=KeyVaultProperties(
                    key_identifier=str(key.id), identity=uai.client_id
                ),
            ),
        ),
    ).result()
    result = revoke_and_restore_registry_key(
        RevokeRestoreRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-acr",
            registry_name="acrhsm1",
            propagation_timeout_minutes=0.5,
        )
    )
    assert result.restored == "ok" and result.revoked != "ok"
    assert grants(emulator, hsm, str(uai.principal_id)) == [
        ("/keys/acr-key", SERVICE_ENCRYPTION_USER)
    ]


def registry_request(block: str, **overrides: object) -> EncryptedRegistryRequest:
    values: dict[str, object] = {
        "azure_credentials_block": block,
        "resource_group": "rg-acr",
        "location": "westeurope",
        "registry_name": "acrhsm2",
        "identity_name": "acr-id",
        "key_store": "managed-hsm",
        "hsm_name": "hsm1",
        "hsm_resource_group": "rg",
        "key_name": "acr-key",
        "key_size": 2048,
        "propagation_timeout_minutes": 0.5,
    }
    values.update(overrides)
    return EncryptedRegistryRequest(**values)  # type: ignore[arg-type]


def test_registry_created_on_an_hsm_key_and_a_rerun_writes_nothing(
    azure_block: str, emulator: Emulator, hsm: ManagedHsm
) -> None:
    result = create_encrypted_registry(registry_request(azure_block))
    assert result.vault.kind == "managed-hsm" and result.vault.id == hsm.id
    assert [v.kty for v in key_versions(emulator, hsm, "acr-key")] == ["RSA-HSM"]
    principal = result.identity_principal_id
    assert grants(emulator, hsm, principal) == [("/keys/acr-key", SERVICE_ENCRYPTION_USER)]
    stored = emulator.arm.get(result.registry.id)
    assert stored is not None
    kvp = stored["properties"]["encryption"]["keyVaultProperties"]
    versioned = kvp["versionedKeyIdentifier"]
    assert kvp["keyIdentifier"] == versioned.rsplit("/", 1)[0]  # versionless: follows versions
    assert versioned.startswith(hsm.properties.hsm_uri.rstrip("/") + "/keys/acr-key/")
    emulator.requests.clear()
    assert create_encrypted_registry(registry_request(azure_block)) == result
    assert writes(emulator) == []
    assert len(key_versions(emulator, hsm, "acr-key")) == 1


def test_a_registry_on_an_hsm_not_activated_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    create_hsm(azure, emulator)
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="hsm_name = 'hsm1': the managed HSM is not activated"):
        create_encrypted_registry(registry_request(azure_block))
    assert writes(emulator) == []
    assert (
        emulator.arm.get(
            f"/subscriptions/{azure.subscription_id}/resourceGroups/rg-acr/providers/"
            "Microsoft.ContainerRegistry/registries/acrhsm2"
        )
        is None
    )


def test_a_registry_request_names_its_store() -> None:
    values = {
        "resource_group": "rg",
        "location": "westeurope",
        "registry_name": "acrhsm2",
        "identity_name": "id",
        "key_name": "k",
        "key_store": "managed-hsm",
    }
    with pytest.raises(InvalidRequest) as refused:
        parse_request(EncryptedRegistryRequest, values)
    assert str(refused.value) == "request.hsm_name = None: required with key_store managed-hsm"
