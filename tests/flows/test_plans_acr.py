"""Plan before apply (`plan_only`) and honest re-run output for the container registry and
confidential-VM flows: a plan writes nothing and names what each step would do, the run
does it, a re-run says `unchanged` and writes nothing."""

from __future__ import annotations

from typing import Any

from byok.key_policy import RotationPolicySpec
from byok.outcomes import Plan, applied
from clients.azure import AzureClients
from emulator.server import Emulator
from flows.acr import (
    EncryptedRegistryRequest,
    FirewallRequest,
    RegistryRequest,
    RegistryTemplateRequest,
    RevokeRestoreRequest,
    RotateRegistryKeyRequest,
    SwitchIdentityRequest,
    create_encrypted_registry,
    create_encrypted_registry_from_template,
    registry_key_vault_firewall,
    revoke_and_restore_registry_key,
    rotate_registry_key_flow,
    show_registry_encryption,
    switch_registry_encryption_identity,
)
from flows.confidential_vm import (
    prepare_confidential_vm_encryption,
    rotate_confidential_vm_key,
)
from tests.flows.test_confidential_vm_flow import (
    image_version,
    prepare_request,
    rotation,
    with_vm,
)
from tests.helpers import outcomes, run_with_tables, write_requests


def registry_request(block: str, **overrides: Any) -> EncryptedRegistryRequest:
    values: dict[str, Any] = {
        "azure_credentials_block": block,
        "resource_group": "rg-acr-plan",
        "location": "westeurope",
        "registry_name": "acrplan1",
        "identity_name": "acr-plan-identity",
        "vault_name": "kv-acr-plan",
        "key_name": "acr-plan-key",
        "key_size": 2048,
        "automatic_rotation": False,
        "propagation_timeout_minutes": 0.5,
    }
    return EncryptedRegistryRequest(**{**values, **overrides})


def planned(flow: Any, request: Any, emulator: Emulator) -> Plan:
    """The flow's plan for `request`, which must write nothing and be its plan artifact."""
    before = len(emulator.requests.find())
    plan, tables = run_with_tables(flow, request.model_copy(update={"plan_only": True}))
    assert write_requests(emulator, before) == []
    assert isinstance(plan, Plan)
    assert [s.row() for s in plan.steps] == tables.get(f"{plan.flow}-plan", [])
    return plan


def test_registry_plan_then_run_then_rerun(azure_block: str, emulator: Emulator) -> None:
    request = registry_request(azure_block)
    plan = planned(create_encrypted_registry, request, emulator)
    assert [(s.step, s.said().split(" (")[0]) for s in plan.steps] == [
        ("Create resource group", "would create"),
        ("Create a user-assigned managed identity", "would create"),
        ("Create key vault", "would create"),
        ("Enable key vault access", "would grant"),
        ("Create key", "would create"),
        ("Create a registry with customer-managed key", "would create"),
        ("Verify the registry uses the key", "would verify"),
    ]
    assert not [r for r in emulator.arm.resources if "acr-plan" in r or "acrplan1" in r]

    _, tables = run_with_tables(create_encrypted_registry, request)
    assert outcomes(tables["create-encrypted-registry-summary"]) == [
        ("Create resource group", "created"),
        ("Create a user-assigned managed identity", "created"),
        ("Create key vault", "created"),
        ("Enable key vault access", "granted"),
        ("Create key", "created"),
        ("Create a registry with customer-managed key", "created"),
        ("Verify the registry uses the key", "verified"),
    ]

    before = len(emulator.requests.find())
    _, tables = run_with_tables(create_encrypted_registry, request)
    assert write_requests(emulator, before) == []
    summary = outcomes(tables["create-encrypted-registry-summary"])
    assert {o for step, o in summary if not step.startswith("Verify")} == {"unchanged"}
    assert planned(create_encrypted_registry, request, emulator).writes == []

    changed = request.model_copy(
        update={"rotation_policy": RotationPolicySpec(rotate_after_days=90)}
    )
    (write,) = planned(create_encrypted_registry, changed, emulator).writes
    assert write.step == "Set the key rotation policy"
    assert write.said().startswith("would update (lifetimeActions: ")


PLANNED = {
    "created": "would create",
    "granted": "would grant",
    "updated": "would update",
    "verified": "would verify",
    "unchanged": "exists, unchanged",
}
"""A summary's outcome and the plan's word for it."""


def registry_ref(block: str) -> dict[str, str]:
    return {
        "azure_credentials_block": block,
        "resource_group": "rg-acr-plan",
        "registry_name": "acrplan1",
    }


def said(plan: Plan) -> list[tuple[str, str]]:
    return [(s.step, s.said()) for s in plan.steps]


def rerun_unchanged(flow: Any, request: Any, emulator: Emulator) -> None:
    """A re-run writes nothing and says `unchanged` for every step that writes; its plan
    has no write either."""
    before = len(emulator.requests.find())
    _, tables = run_with_tables(flow, request)
    assert write_requests(emulator, before) == []
    summary = outcomes(next(t for k, t in tables.items() if k.endswith("-summary")))
    assert {o for _, o in summary} <= {"unchanged", "verified"}, summary
    assert planned(flow, request, emulator).writes == []


def test_rotation_plan_then_run_then_rerun(azure_block: str, emulator: Emulator) -> None:
    created, _ = run_with_tables(create_encrypted_registry, registry_request(azure_block))
    old = created.registry.versioned_key_id
    rotation = RotateRegistryKeyRequest(
        **registry_ref(azure_block), timeout_minutes=0.2, poll_seconds=0.05, rotation_id="r1"
    )
    plan = planned(rotate_registry_key_flow, rotation, emulator)
    new = f"{old.rsplit('/', 1)[0]}/(new version)"
    assert said(plan) == [
        ("Create a new key version", "would create"),
        ("Rotate the registry key", f"would update (keyIdentifier: {old} → {new})"),
        ("Verify the registry uses the key", f"would verify (key {new})"),
        ("Verify the old key version stays enabled", "would verify"),
    ]
    _, tables = run_with_tables(rotate_registry_key_flow, rotation)
    assert outcomes(tables["rotate-registry-key-summary"]) == [
        ("Create a new key version", "created"),
        ("Rotate the registry key", "updated"),
        ("Verify the registry uses the key", "verified"),
        ("Verify the old key version stays enabled", "verified"),
    ]
    rerun_unchanged(rotate_registry_key_flow, rotation, emulator)
    assert said(planned(rotate_registry_key_flow, rotation, emulator))[0] == (
        "Create a new key version",
        "exists, unchanged (made by an earlier run)",
    )


def test_template_plan_then_run_then_rerun(azure_block: str, emulator: Emulator) -> None:
    values = registry_request(azure_block).model_dump(exclude={"vault_rbac", "plan_only"})
    request = RegistryTemplateRequest(**values)
    plan = planned(create_encrypted_registry_from_template, request, emulator)
    assert [(step, o.split(" (")[0]) for step, o in said(plan)] == [
        ("Create resource group", "would create"),
        ("Create key vault", "would create"),
        ("Create key", "would create"),
        ("Deploy the template", "would deploy"),
        ("Verify the registry uses the key", "would verify"),
    ]
    _, tables = run_with_tables(create_encrypted_registry_from_template, request)
    summary = outcomes(tables["create-encrypted-registry-from-template-summary"])
    assert ("Deploy the template", "deployed") in summary
    rerun_unchanged(create_encrypted_registry_from_template, request, emulator)


def test_show_plan_is_empty(azure_block: str, emulator: Emulator) -> None:
    run_with_tables(create_encrypted_registry, registry_request(azure_block))
    plan = planned(show_registry_encryption, RegistryRequest(**registry_ref(azure_block)), emulator)
    assert plan.flow == "show-registry-encryption" and plan.steps == []


def test_revocation_plan_names_both_writes(azure_block: str, emulator: Emulator) -> None:
    created, _ = run_with_tables(create_encrypted_registry, registry_request(azure_block))
    request = RevokeRestoreRequest(**registry_ref(azure_block), propagation_timeout_minutes=0.5)
    plan = planned(revoke_and_restore_registry_key, request, emulator)
    vault, registry = created.vault.id, created.registry.id
    principal = created.identity_principal_id
    assert [(s.step, s.resource, s.said()) for s in plan.steps] == [
        ("Revoke key access", vault, f"would revoke (key use by {principal})"),
        ("Prove registry data is inaccessible", registry, "would verify"),
        ("Enable key vault access", vault, f"would grant (key use by {principal})"),
        ("Prove registry data is accessible", registry, "would verify"),
    ]
    _, tables = run_with_tables(revoke_and_restore_registry_key, request)
    assert outcomes(tables["revoke-and-restore-registry-key-summary"]) == [
        ("Revoke key access", "revoked"),
        ("Prove registry data is inaccessible", "verified"),
        ("Enable key vault access", "granted"),
        ("Prove registry data is accessible", "verified"),
    ]


def test_firewall_plan_then_run_then_rerun(azure_block: str, emulator: Emulator) -> None:
    run_with_tables(create_encrypted_registry, registry_request(azure_block))
    request = FirewallRequest(
        **registry_ref(azure_block),
        vault_name="kv-acr-plan",
        key_name="acr-plan-key-2",
        key_size=2048,
        operator_ip_rules=["127.0.0.1/32"],
        propagation_timeout_minutes=0.5,
    )
    plan = planned(registry_key_vault_firewall, request, emulator)
    steps = [(s.step, s.said().split(" (")[0]) for s in plan.steps]
    assert steps == [
        ("Configure system-assigned identity", "would update"),
        ("Enable key vault access", "would grant"),
        ("Switch encryption to the system identity", "would update"),
        ("Enable key vault bypass", "would update"),
        ("Create key", "would create"),
        ("Rotate the registry key", "would update"),
        ("Verify the registry uses the key", "would verify"),
    ]
    _, tables = run_with_tables(registry_key_vault_firewall, request)
    summary = outcomes(tables["registry-key-vault-firewall-summary"])
    assert [(step, PLANNED[o]) for step, o in summary] == steps
    rerun_unchanged(registry_key_vault_firewall, request, emulator)


def test_identity_switch_plan_then_run_then_rerun(azure_block: str, emulator: Emulator) -> None:
    created, _ = run_with_tables(create_encrypted_registry, registry_request(azure_block))
    request = SwitchIdentityRequest(
        **registry_ref(azure_block),
        old_identity_id=created.identity_id,
        new_identity_name="acr-plan-identity-2",
        location="westeurope",
        propagation_timeout_minutes=0.5,
    )
    plan = planned(switch_registry_encryption_identity, request, emulator)
    steps = [(s.step, s.said().split(" (")[0]) for s in plan.steps]
    assert steps == [
        ("Re-assign the identity", "exists, unchanged"),
        ("Create a user-assigned managed identity", "would create"),
        ("Assign the identity to the registry", "would update"),
        ("Enable key vault access", "would grant"),
        ("Rotate the registry key", "would update"),
        ("Remove the old identity", "would update"),
    ]
    _, tables = run_with_tables(switch_registry_encryption_identity, request)
    assert outcomes(tables["switch-registry-encryption-identity-summary"]) == [
        ("Re-assign the identity", "unchanged"),
        ("Create a user-assigned managed identity", "created"),
        ("Assign the identity to the registry", "updated"),
        ("Enable key vault access", "granted"),
        ("Rotate the registry key", "updated"),
        ("Remove the old identity", "updated"),
    ]
    rerun_unchanged(switch_registry_encryption_identity, request, emulator)


def test_confidential_plan_then_run_then_rerun(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    request = with_vm(prepare_request(azure_block), image_version(azure))
    plan = planned(prepare_confidential_vm_encryption, request, emulator)
    steps = [(s.step, s.said().split(" (")[0]) for s in plan.steps]
    assert steps == [
        ("Create resource group", "exists, unchanged"),  # the image's group
        ("Create key vault", "would create"),
        ("Make the key vault Premium", "would update"),
        ("Create the confidential VM key", "would create"),
        ("Install the Confidential VM Orchestrator", "would create"),
        ("Grant the orchestrator key release", "would grant"),
        ("Create disk encryption set", "would create"),
        ("Grant the set's identity access to the key", "would grant"),
        ("Wait until the grant is effective", "would verify"),
        ("Create network resources", "would create"),
        ("Create network resources", "would create"),
        ("Create the confidential VM", "would create"),
    ]
    assert plan.steps[2].said() == "would update (sku: standard → premium)"
    _, tables = run_with_tables(prepare_confidential_vm_encryption, request)
    summary = outcomes(tables["prepare-confidential-vm-encryption-summary"])
    assert [(step, PLANNED[o]) for step, o in summary] == steps
    before = len(emulator.requests.find())
    _, tables = run_with_tables(prepare_confidential_vm_encryption, request)
    # the set's key is re-applied (Azure confirms the key access that way), nothing else
    assert [w.split(" ")[0] for w in write_requests(emulator, before)] == ["PATCH"]
    summary = outcomes(tables["prepare-confidential-vm-encryption-summary"])
    assert {o for _, o in summary} == {"unchanged", "verified"}, summary
    assert planned(prepare_confidential_vm_encryption, request, emulator).writes == []


def test_confidential_rotation_plan_then_run_then_rerun(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    asked = with_vm(prepare_request(azure_block), image_version(azure))
    prepared = applied(prepare_confidential_vm_encryption(asked))
    des = prepared.disk_encryption_set
    request = rotation(azure_block)
    plan = planned(rotate_confidential_vm_key, request, emulator)
    assert plan.flow == "rotate-confidential-vm-key"
    vm = f"{prepared.key.versionless_id}/(new version)"
    assert [(s.step, s.said()) for s in plan.steps] == [
        ("Plan the offline rotation", "read (VMs on the set: rg-cvm/cvm1 running)"),
        (
            "Record the VMs to start again",
            "would update (rotation r1 recorded, to start again: rg-cvm/cvm1)",
        ),
        ("Deallocate the VMs", "would stop (deallocated)"),
        ("Create a new key version", "would create"),
        ("Update the disk encryption set key", f"would update (activeKey: {des.key_url} → {vm})"),
        ("Verify the disk encryption set key", "would verify"),
        ("Start the VMs again", "would start (running)"),
        ("Clear the rotation record", "would update (rotation record cleared)"),
    ]
    _, tables = run_with_tables(rotate_confidential_vm_key, request)
    assert outcomes(tables["rotate-confidential-vm-key-summary"]) == [
        ("Plan the offline rotation", "read"),
        ("Record the VMs to start again", "updated"),
        ("Deallocate the VMs", "stopped"),
        ("Create a new key version", "created"),
        ("Update the disk encryption set key", "updated"),
        ("Verify the disk encryption set key", "verified"),
        ("Start the VMs again", "started"),
        ("Clear the rotation record", "updated"),
    ]
    before = len(emulator.requests.find())
    _, tables = run_with_tables(rotate_confidential_vm_key, request)
    assert write_requests(emulator, before) == []
    assert outcomes(tables["rotate-confidential-vm-key-summary"]) == [
        ("Plan the offline rotation", "read"),
        ("Verify the disk encryption set key", "verified"),
        ("Start the VMs again", "unchanged"),
        ("Clear the rotation record", "unchanged"),
    ]
