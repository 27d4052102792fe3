"""The disk encryption set flows end to end against the emulator: results, emulator state,
rules refused before any write, propagation absorbed, re-runs after crashes, key rotation."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from byok.errors import ByokError, ConcurrentRun, OperationFailed, ServiceRefused
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from flows.disk_encryption_set import (
    DesKeyRotationRequest,
    DiskEncryptionSetRequest,
    prepare_disk_encryption_set,
    rotate_disk_encryption_set_key,
)
from tasks.key_vault import READER, assign_role
from tests.helpers import vault_parameters, vault_with_key

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


def test_rerun_creates_nothing_new(azure_block: str, emulator: Emulator, azure) -> None:
    policy = {"rotate_after_days": 90, "expires_after_days": 365}
    first = prepare_disk_encryption_set(request(azure_block, rotation_policy=policy))
    set_policy = azure.keys(first.vault.url).get_key_rotation_policy("aks-key")
    assert set_policy.expires_in == "P365D"
    assert {(a.action.lower(), a.time_after_create) for a in set_policy.lifetime_actions} == {
        ("rotate", "P90D"),
        ("notify", None),
    }
    counts = (len(resources(emulator, DES_TYPE)), len(resources(emulator, ROLE_ASSIGNMENT_TYPE)))
    emulator.requests.clear()
    second = prepare_disk_encryption_set(request(azure_block, rotation_policy=policy))
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


def test_a_set_whose_creation_ended_failed_is_named_and_repaired_grant_first(
    azure_block: str, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.faults.add(
        Fault(
            "lro-failed",
            method="PUT",
            path="/diskEncryptionSets/des-aks$",
            code="KeyVaultAccessForbidden",
            message="The set's identity cannot use the key.",
        )
    )
    # the run stops right after: its grant to the set's identity crashes
    emulator.faults.add(
        Fault("status", method="PUT", path="/accessPolicies/add$", status=400, code="Crash")
    )
    prefect_logs = logging.getLogger("prefect")
    prefect_logs.addHandler(caplog.handler)
    try:
        with pytest.raises(ByokError, match="Crash"):
            prepare_disk_encryption_set(request(azure_block, vault_rbac=False))
    finally:
        prefect_logs.removeHandler(caplog.handler)
    assert re.search(
        r"/diskEncryptionSets/des-aks: disk encryption set creation ended Failed: "
        r"KeyVaultAccessForbidden: The set's identity cannot use the key\.",
        caplog.text,
    ), caplog.text
    (des,) = resources(emulator, DES_TYPE)
    assert des["properties"]["provisioningState"] == "Failed"
    emulator.requests.clear()
    result = prepare_disk_encryption_set(request(azure_block, vault_rbac=False))
    (des,) = resources(emulator, DES_TYPE)
    assert des["properties"]["provisioningState"] == "Succeeded"
    assert result.disk_encryption_set.key_url == result.key.id
    order = [f"{w.split(' ')[0]} {w.rsplit('/', 1)[1]}" for w in writes(emulator)]
    assert "PUT des-aks" not in order, order
    assert order.index("PUT add") < order.index("PATCH des-aks"), order  # grant, re-submit


def test_a_vault_whose_creation_ended_failed_is_not_adopted_as_it_is(
    azure_block: str, emulator: Emulator
) -> None:
    emulator.faults.add(Fault("lro-failed", method="PUT", path="/vaults/kv-aks$"))
    with pytest.raises(OperationFailed, match=r"/vaults/kv-aks: key vault creation ended Failed"):
        prepare_disk_encryption_set(request(azure_block))
    emulator.requests.clear()
    prepare_disk_encryption_set(request(azure_block))
    (vault,) = resources(emulator, "Microsoft.KeyVault/vaults")
    assert vault["properties"]["provisioningState"] == "Succeeded"
    assert len(emulator.requests.find("PUT", "/vaults/kv-aks$")) == 1  # re-submitted once


def rotation(block: str, **overrides: object) -> DesKeyRotationRequest:
    values: dict[str, object] = {
        "azure_credentials_block": block,
        "resource_group": "rg-aks",
        "des_name": "des-aks",
        "timeout_minutes": 0.5,
        "poll_seconds": 0.05,
    }
    values.update(overrides)
    return DesKeyRotationRequest(**values)  # type: ignore[arg-type]


def key_versions(emulator: Emulator) -> list:
    (data,) = emulator.state.keyvault.vaults.values()
    return data.keys["aks-key"].versions


def test_rotation_rerun_after_a_crash_makes_one_version(
    azure_block: str, emulator: Emulator
) -> None:
    prepare_disk_encryption_set(request(azure_block))
    emulator.requests.clear()
    emulator.faults.add(
        Fault("status-after", method="POST", path=r"/keys/aks-key/create$", status=504)
    )
    emulator.faults.add(
        Fault(
            "status",
            method="PATCH",
            path="/diskEncryptionSets/des-aks$",
            status=400,
            code="InjectedCrash",
        )
    )
    with pytest.raises(ServiceRefused, match="des-aks: updating the key refused: InjectedCrash"):
        rotate_disk_encryption_set_key(rotation(azure_block, rotation_id="r1"))
    assert len(emulator.requests.find("POST", r"/keys/aks-key/create$")) == 1
    assert len(key_versions(emulator)) == 2  # made, the answer lost, the set not updated
    rotated = rotate_disk_encryption_set_key(rotation(azure_block, rotation_id="r1"))
    versions = key_versions(emulator)
    assert len(versions) == 2 and rotated.key_url.endswith("/" + versions[-1].version)
    again = rotate_disk_encryption_set_key(rotation(azure_block, rotation_id="r1"))
    assert again.key_url == rotated.key_url and len(key_versions(emulator)) == 2


@pytest.mark.slow
def test_two_identical_runs_make_one_set(azure_block: str, emulator: Emulator) -> None:
    # The first run holds the set while the others start: its own key access takes 8 s to
    # apply (a delay that, unlike latency, holds no emulator thread).
    emulator.faults.add(Fault("delayed-effect", effect="access-grant", seconds=8))
    outcomes: dict[str, object] = {}

    def run(label: str, wait: bool) -> None:
        try:
            outcomes[label] = prepare_disk_encryption_set(
                request(azure_block, wait_for_other_run=wait)
            )
        except Exception as exc:
            outcomes[label] = exc

    first = threading.Thread(target=run, args=("first", False))
    first.start()
    deadline = time.monotonic() + 60
    while not emulator.requests.find("PUT", "/resourcegroups/rg-aks$"):
        assert time.monotonic() < deadline and first.is_alive()
        time.sleep(0.1)
    others = [threading.Thread(target=run, args=a) for a in (("fast", False), ("waits", True))]
    for thread in others:
        thread.start()
    for thread in (first, *others):
        thread.join(120)
    assert isinstance(outcomes["fast"], ConcurrentRun), outcomes
    assert re.search(
        r"/diskEncryptionSets/des-aks: another run is working on", str(outcomes["fast"])
    )
    assert outcomes["waits"] == outcomes["first"]
    assert len(resources(emulator, DES_TYPE)) == 1
    assert len(key_versions(emulator)) == 1


def test_a_resent_role_assignment_refused_as_existing_is_success(
    azure: AzureClients, emulator: Emulator
) -> None:
    vault, _ = vault_with_key(azure, emulator, rbac=True)
    principal = emulator.state.service_principal.object_id
    emulator.requests.clear()
    emulator.faults.add(Fault("reset-after", method="PUT", path="/roleAssignments/"))
    assign_role(azure, str(vault.id), principal, READER, 10)
    # served, answer lost; re-sent by the SDK (PUT), refused as existing: success
    assert [r.status for r in emulator.requests.find("PUT", "/roleAssignments/")] == [0, 409]
    readers = [
        a
        for a in resources(emulator, ROLE_ASSIGNMENT_TYPE)
        if a["properties"]["principalId"] == principal
        and a["properties"]["roleDefinitionId"].endswith(READER)
    ]
    assert len(readers) == 1


def test_a_vault_firewall_refusal_fails_at_once_naming_it(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    from azure.mgmt.keyvault.models import (
        NetworkRuleSet,
        VaultPatchParameters,
        VaultPatchProperties,
    )

    vault_with_key(azure, emulator, group="rg-aks", vault="kv-aks", key="aks-key")
    azure.keyvault_management().vaults.update(
        "rg-aks",
        "kv-aks",
        VaultPatchParameters(
            properties=VaultPatchProperties(
                network_acls=NetworkRuleSet(default_action="Deny", bypass="None")
            )
        ),
    )
    started = time.monotonic()
    with pytest.raises(
        ServiceRefused, match=r"/keys/aks-key: key creation refused: ForbiddenByFirewall: "
    ):
        prepare_disk_encryption_set(request(azure_block, propagation_timeout_minutes=15))
    assert time.monotonic() - started < 120  # not waited out as a propagation delay
