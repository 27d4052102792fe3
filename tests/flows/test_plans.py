"""Plan before apply (`plan_only`) and honest re-run output: a plan reads and writes
nothing, names what each step would do, and matches what the run then does; a re-run says
`unchanged` for every step and writes nothing."""

from __future__ import annotations

from typing import Any

from byok.key_policy import RotationPolicySpec
from byok.outcomes import Plan
from emulator.server import Emulator
from flows.disk_encryption_set import (
    DesKeyRotationRequest,
    DiskEncryptionSetRequest,
    prepare_disk_encryption_set,
    rotate_disk_encryption_set_key,
)
from tests.helpers import as_plan, outcomes, run_with_tables, write_requests


def des_request(block: str, **overrides: Any) -> DiskEncryptionSetRequest:
    values: dict[str, Any] = {
        "azure_credentials_block": block,
        "resource_group": "rg-plan",
        "location": "westeurope",
        "vault_name": "kv-plan",
        "key_name": "plan-key",
        "des_name": "des-plan",
        "propagation_timeout_minutes": 0.5,
    }
    return DiskEncryptionSetRequest(**{**values, **overrides})


def test_des_plan_writes_nothing_and_the_run_does_what_it_said(
    azure_block: str, emulator: Emulator
) -> None:
    request = des_request(azure_block, vault_name="kv-plan1", des_name="des-plan1")
    before = len(emulator.requests.find())
    plan, tables = run_with_tables(prepare_disk_encryption_set, as_plan(request))
    assert write_requests(emulator, before) == []
    assert isinstance(plan, Plan) and plan.flow == "prepare-disk-encryption-set"
    assert [row.row() for row in plan.steps] == tables["prepare-disk-encryption-set-plan"]
    assert outcomes(tables["prepare-disk-encryption-set-plan"]) == [
        ("Create resource group", "would create"),
        ("Create key vault", "would create"),
        ("Create key", "would create"),
        ("Create disk encryption set", "would create"),
        ("Grant the set's identity access to the key", "would grant"),
    ]
    assert not [r for r in emulator.arm.resources if "kv-plan1" in r or "des-plan1" in r]

    _, tables = run_with_tables(prepare_disk_encryption_set, request)
    done = outcomes(tables["prepare-disk-encryption-set-summary"])
    assert ("Create key vault", "created") in done and ("Create key", "created") in done
    assert ("Create disk encryption set", "created") in done
    assert ("Enable key vault access", "granted") not in done  # the step has a run name
    assert ("Grant the set's identity access to the key", "granted") in done


def test_des_rerun_says_unchanged(azure_block: str, emulator: Emulator) -> None:
    request = des_request(azure_block, vault_name="kv-plan2", des_name="des-plan2")
    run_with_tables(prepare_disk_encryption_set, request)
    before = len(emulator.requests.find())
    _, tables = run_with_tables(prepare_disk_encryption_set, request)
    # the set's key is re-applied (Azure confirms the key access that way), nothing else
    assert [w.split(" ")[0] for w in write_requests(emulator, before)] == ["PATCH"]
    summary = outcomes(tables["prepare-disk-encryption-set-summary"])
    assert {o for step, o in summary if step != "Wait until the grant is effective"} == {
        "unchanged"
    }, summary
    assert ("Wait until the grant is effective", "verified") in summary
    plan, _ = run_with_tables(prepare_disk_encryption_set, as_plan(request))
    assert plan.writes == [], [s.row() for s in plan.steps]


def test_des_plan_names_the_fields_that_would_change(azure_block: str, emulator: Emulator) -> None:
    request = des_request(azure_block, vault_name="kv-plan3", des_name="des-plan3")
    run_with_tables(prepare_disk_encryption_set, request)
    changed = request.model_copy(
        update={
            "auto_key_rotation": True,
            "rotation_policy": RotationPolicySpec(rotate_after_days=90, expires_after_days=365),
            "plan_only": True,
        }
    )
    before = len(emulator.requests.find())
    plan, _ = run_with_tables(prepare_disk_encryption_set, changed)
    assert write_requests(emulator, before) == []
    said = {s.step: s.said() for s in plan.writes}
    assert said == {
        "Set the key rotation policy": "would update (expiresIn: (none) → P365D; "
        "lifetimeActions: notify P30D before expiry → notify P30D before expiry, "
        "rotate P90D after creation)",
        "Wait until the grant is effective": "would update "
        "(rotationToLatestKeyVersionEnabled: False → True)",
    }


def test_des_rotation_plan_then_rotation(azure_block: str, emulator: Emulator) -> None:
    request = des_request(azure_block, vault_name="kv-plan4", des_name="des-plan4")
    prepared, _ = run_with_tables(prepare_disk_encryption_set, request)
    des = prepared.disk_encryption_set
    rotation = DesKeyRotationRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-plan",
        des_name="des-plan4",
        timeout_minutes=1,
        poll_seconds=0.2,
        rotation_id="plan-test",
    )
    before = len(emulator.requests.find())
    plan, _ = run_with_tables(rotate_disk_encryption_set_key, as_plan(rotation))
    assert write_requests(emulator, before) == []
    assert [s.said() for s in plan.steps] == [
        "would create",
        f"would update (activeKey: {des.key_url} → {prepared.key.versionless_id}/(new version))",
        "would verify",
    ]
    rotated, tables = run_with_tables(rotate_disk_encryption_set_key, rotation)
    assert outcomes(tables["rotate-disk-encryption-set-key-summary"]) == [
        ("Create a new key version", "created"),
        ("Update the disk encryption set key", "updated"),
        ("Verify the disk encryption set key", "verified"),
    ]
    plan, _ = run_with_tables(rotate_disk_encryption_set_key, as_plan(rotation))
    assert plan.steps[0].said() == "exists, unchanged (made by an earlier run)"
    assert rotated.key_url in plan.steps[0].resource
