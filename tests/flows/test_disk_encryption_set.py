"""The disk encryption set flows end to end against the emulator: results, emulator state,
rules refused before any write, propagation absorbed, re-runs after crashes, key rotation."""

from __future__ import annotations

import pytest

from byok.validation import InvalidRequest
from emulator.faults import Fault
from emulator.server import Emulator
from flows.disk_encryption_set import (
    DesKeyRotationRequest,
    DiskEncryptionSetRequest,
    prepare_disk_encryption_set,
    rotate_disk_encryption_set_key,
)
from tests.helpers import vault_parameters

DES_TYPE = "microsoft.compute/diskencryptionsets"
ROLE_ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"


def request(block: str, **overrides: object) -> DiskEncryptionSetRequest:
    values: dict[str, object] = {
        "azure_credentials_block": block,
        "resource_group": "rg-aks",
        "location": "westeurope",
        "vault_name": "kv-aks",
        "key_name": "aks-key",
        "des_name": "des-aks",
        "propagation_timeout_minutes": 0.5,
    }
    values.update(overrides)
    return DiskEncryptionSetRequest(**values)  # type: ignore[arg-type]


def resources(emulator: Emulator, type_name: str) -> list[dict]:
    return [r for r in emulator.arm.resources.values() if r["type"].lower() == type_name.lower()]


def writes(emulator: Emulator) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()
        if r.method in ("PUT", "PATCH", "DELETE") or r.path.endswith(("/create", "/rotate"))
    ]


def test_access_policy_vault_end_to_end(azure_block: str, emulator: Emulator) -> None:
    result = prepare_disk_encryption_set(request(azure_block, vault_rbac=False))
    des = result.disk_encryption_set
    assert des.key_url == result.key.id and result.key.size == 3072
    assert result.vault.rbac is False
    stored = emulator.arm.get(des.id)
    assert stored is not None and stored["properties"]["activeKey"]["keyUrl"] == result.key.id
    vault = emulator.arm.get(result.vault.id)
    assert vault is not None
    policy = next(
        p for p in vault["properties"]["accessPolicies"] if p["objectId"] == des.principal_id
    )
    assert sorted(policy["permissions"]["keys"]) == ["get", "unwrapKey", "wrapKey"]
    readers = [
        a
        for a in resources(emulator, ROLE_ASSIGNMENT_TYPE)
        if a["properties"]["principalId"] == des.principal_id
    ]
    assert [a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] for a in readers] == [
        "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    ]


def test_rbac_vault_absorbs_propagation_delays(azure_block: str, emulator: Emulator) -> None:
    emulator.faults.add(Fault("delayed-effect", effect="access-grant", seconds=1.5, count=None))
    emulator.faults.add(Fault("delayed-effect", effect="principal-visible", seconds=1.0))
    result = prepare_disk_encryption_set(request(azure_block))
    des = result.disk_encryption_set
    assigned = {
        a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
        for a in resources(emulator, ROLE_ASSIGNMENT_TYPE)
        if a["properties"]["principalId"] == des.principal_id
    }
    assert assigned == {"e147488a-f6f5-4113-8e2d-b22465e65bf6"}  # no Reader on RBAC vaults
    refused = [r for r in emulator.requests.find("PUT", "roleAssignments") if r.status == 400]
    assert refused, "the set's principal was not visible at first: the grant was retried"
    forbidden = [
        r for r in emulator.requests.find("PATCH", "diskEncryptionSets") if r.status == 400
    ]
    assert forbidden, "the grant was not effective at first: the check was retried"
    assert emulator.requests.find("PATCH", "diskEncryptionSets")[-1].status == 202


def test_rerun_creates_nothing_new(azure_block: str, emulator: Emulator) -> None:
    first = prepare_disk_encryption_set(request(azure_block))
    counts = (len(resources(emulator, DES_TYPE)), len(resources(emulator, ROLE_ASSIGNMENT_TYPE)))
    emulator.requests.clear()
    second = prepare_disk_encryption_set(request(azure_block))
    assert second == first
    assert (
        len(resources(emulator, DES_TYPE)),
        len(resources(emulator, ROLE_ASSIGNMENT_TYPE)),
    ) == counts
    assert all(w.startswith("PATCH") for w in writes(emulator)), writes(emulator)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", r"/vaults/kv-aks$"),
        ("POST", r"/keys/aks-key/create$"),
        ("PUT", r"/diskEncryptionSets/des-aks$"),
        ("PUT", r"/roleAssignments/"),
        ("PATCH", r"/diskEncryptionSets/des-aks$"),
    ],
    ids=["vault", "key", "des", "grant", "wait"],
)
def test_rerun_after_a_crash_at_each_step(
    azure_block: str, emulator: Emulator, method: str, path: str
) -> None:
    emulator.faults.add(Fault("status", method=method, path=path, status=400, code="InjectedCrash"))
    with pytest.raises(Exception, match="InjectedCrash"):
        prepare_disk_encryption_set(request(azure_block))
    result = prepare_disk_encryption_set(request(azure_block))
    assert len(resources(emulator, DES_TYPE)) == 1
    assert len(resources(emulator, "Microsoft.KeyVault/vaults")) == 1
    vault_port = int(result.vault.url.rsplit(":", 1)[1])
    keys = emulator.state.keyvault.vaults[vault_port].keys
    assert list(keys) == ["aks-key"] and len(keys["aks-key"].versions) == 1


def test_existing_vault_without_purge_protection_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure
) -> None:
    azure.resources().resource_groups.create_or_update("rg-aks", {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.properties.enable_purge_protection = None
    azure.keyvault_management().vaults.begin_create_or_update("rg-aks", "kv-aks", params).result()
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="enable_purge_protection"):
        prepare_disk_encryption_set(request(azure_block))
    assert writes(emulator) == []


def test_existing_ec_key_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure
) -> None:
    azure.resources().resource_groups.create_or_update("rg-aks", {"location": "westeurope"})
    vault = (
        azure.keyvault_management()
        .vaults.begin_create_or_update("rg-aks", "kv-aks", vault_parameters(emulator))
        .result()
    )
    azure.keys(str(vault.properties.vault_uri)).create_ec_key("aks-key")
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="key_name = 'aks-key': the key is EC"):
        prepare_disk_encryption_set(request(azure_block))
    assert writes(emulator) == []


def test_vault_in_another_region_is_refused(azure_block: str, emulator: Emulator, azure) -> None:
    azure.resources().resource_groups.create_or_update("rg-aks", {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.location = "eastus"
    azure.keyvault_management().vaults.begin_create_or_update("rg-aks", "kv-aks", params).result()
    with pytest.raises(
        InvalidRequest,
        match=r"location = 'westeurope': must be in the same "
        r"region as key vault 'kv-aks' \(eastus\)",
    ):
        prepare_disk_encryption_set(request(azure_block))


def test_bad_names_and_sizes_are_refused(azure_block: str, emulator: Emulator) -> None:
    with pytest.raises(InvalidRequest, match="vault_name = '1kv'"):
        prepare_disk_encryption_set(request(azure_block, vault_name="1kv"))
    with pytest.raises(ValueError, match="key_size"):
        request(azure_block, key_size=1024)
    assert writes(emulator) == []


def test_manual_rotation(azure_block: str, emulator: Emulator) -> None:
    prepared = prepare_disk_encryption_set(request(azure_block))
    rotated = rotate_disk_encryption_set_key(
        DesKeyRotationRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-aks",
            des_name="des-aks",
            timeout_minutes=0.5,
            poll_seconds=0.05,
        )
    )
    assert rotated.key_url != prepared.key.id
    stored = emulator.arm.get(rotated.id)
    assert stored is not None
    props = stored["properties"]
    assert props["activeKey"]["keyUrl"] == rotated.key_url
    assert props["previousKeys"] == [] and "lastKeyRotationTimestamp" in props
    assert "autoKeyRotationError" not in props
    vault_port = int(prepared.vault.url.rsplit(":", 1)[1])
    versions = emulator.state.keyvault.vaults[vault_port].keys["aks-key"].versions
    assert [v.enabled for v in versions] == [True, True]  # the old version stays usable


def test_automatic_rotation_is_waited_for(azure_block: str, emulator: Emulator) -> None:
    prepare_disk_encryption_set(request(azure_block, auto_key_rotation=True))
    rotated = rotate_disk_encryption_set_key(
        DesKeyRotationRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-aks",
            des_name="des-aks",
            timeout_minutes=0.5,
            poll_seconds=0.1,
        )
    )
    assert rotated.rotation_to_latest_key_version
    assert not emulator.requests.find("PATCH", "diskEncryptionSets/des-aks$")[1:]
