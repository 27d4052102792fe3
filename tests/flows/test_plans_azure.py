"""Plan before apply (`plan_only`) and honest re-run output for the gallery, VM, feature
registration, drill, cross-tenant, release pipeline, blast radius and inventory flows: a plan
writes nothing and names what each step would do; the run does it; a re-run says
`unchanged` (or, for reads, `verified`) and writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from byok.drill import RevocationDrillRequest
from byok.inventory.request import BlastRadiusRequest, InventoryRequest
from byok.outcomes import DONE, Plan
from clients.azure import AzureClients
from emulator.server import Emulator
from flows.blast_radius import key_blast_radius
from flows.cross_tenant import CrossTenantDesRequest, prepare_cross_tenant_disk_encryption_set
from flows.gallery import ImageVersionRequest, publish_encrypted_image_version
from flows.inventory import inventory_customer_managed_keys
from flows.registration import FeatureRegistrationRequest, ensure_feature_registration
from flows.release_pipeline import release_pipeline
from flows.revocation_drill import revocation_drill
from flows.virtual_machine import VmFromImageRequest, create_vm_from_encrypted_image
from tests.flows.test_cross_tenant_flow import Customer, customer, xt_request  # noqa: F401
from tests.flows.test_release_pipeline import CHILDREN, count, pipeline_request, ran_children
from tests.flows.test_revocation_drill import drilled, key_versions  # noqa: F401
from tests.helpers import des_in_region, managed_image, outcomes, run_with_tables, write_requests

REREAD = {"unchanged", "verified"}
"""What a re-run's steps may say: nothing written."""


def planned(
    emulator: Emulator, flow: Any, request: Any
) -> tuple[Plan, dict[str, list[dict[str, str]]]]:
    """The plan-only run's plan and tables; asserts it sent no write and published its plan."""
    before = len(emulator.requests.find())
    plan, tables = run_with_tables(flow, request.model_copy(update={"plan_only": True}))
    assert write_requests(emulator, before) == []
    assert isinstance(plan, Plan)
    assert [s.row() for s in plan.steps] == tables[f"{plan.flow}-plan"]
    return plan, tables


def as_done(plan: Plan) -> list[tuple[str, str]]:
    """What the run says once it has done what the plan said."""
    return [(s.step, DONE[s.verb] if s.verb else "unchanged") for s in plan.steps]


def rerun_is_unchanged(emulator: Emulator, flow: Any, request: Any, name: str) -> None:
    """A re-run writes nothing and its summary says so; its plan has no write."""
    before = len(emulator.requests.find())
    _, tables = run_with_tables(flow, request)
    assert write_requests(emulator, before) == []
    summary = tables[f"{name}-summary"]
    assert {outcome for _, outcome in outcomes(summary)} <= REREAD, summary
    plan, _ = planned(emulator, flow, request)
    assert plan.writes == [], [s.row() for s in plan.steps]


# -- ensure-feature-registration --------------------------------------------------------------


def feature_request(block: str) -> FeatureRegistrationRequest:
    return FeatureRegistrationRequest(
        azure_credentials_block=block, poll_seconds=0.01, timeout_minutes=0.5
    )


def test_feature_plan_then_run_then_rerun(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", polls=2)
    emulator.arm.configure_provider("Microsoft.Compute", "NotRegistered", polls=1)
    request = feature_request(azure_block)
    plan, tables = planned(emulator, ensure_feature_registration, request)
    assert outcomes(tables["ensure-feature-registration-plan"]) == [
        ("Register feature", "would register"),
        ("Wait for feature registration", "would wait for"),
        ("Register resource provider", "would register"),
    ]
    assert emulator.arm.feature("Microsoft.Compute", "SIGEncryption").state != "Registered"
    _, tables = run_with_tables(ensure_feature_registration, request)
    assert outcomes(tables["ensure-feature-registration-summary"]) == [
        ("Register feature", "registered"),
        ("Wait for feature registration", "waited for"),
        ("Register resource provider", "registered"),
    ]
    rerun_is_unchanged(emulator, ensure_feature_registration, request, plan.flow)


# -- publish-encrypted-image-version ----------------------------------------------------------


def image_request(block: str, azure: AzureClients, emulator: Emulator) -> ImageVersionRequest:
    we = des_in_region(azure, emulator, "westeurope", "des-plan-we")
    return ImageVersionRequest(
        azure_credentials_block=block,
        resource_group="rg-plan-img",
        location="westeurope",
        gallery_name="gallery_plan",
        image_name="img",
        version="1.0.0",
        source={"managed_image_id": managed_image(azure, "westeurope", luns=(0,))},
        target_regions=[{"name": "westeurope", "encryption": f"{we},0,{we}"}],
        poll_seconds=0.05,
        replication_timeout_minutes=0.5,
    )


def test_gallery_plan_then_publish_then_rerun(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", state="Registered")
    request = image_request(azure_block, azure, emulator)
    plan, tables = planned(emulator, publish_encrypted_image_version, request)
    assert outcomes(tables["publish-encrypted-image-version-plan"]) == [
        ("Register feature", "exists, unchanged"),
        ("Register resource provider", "exists, unchanged"),
        ("Create resource group", "would create"),
        ("Create gallery", "would create"),
        ("Create image definition", "would create"),
        ("Create image version", "would create"),
        ("Wait for replication", "would wait for"),
        ("Verify image version encryption", "would verify"),
    ]
    assert not [r for r in emulator.arm.resources if "gallery_plan" in r]

    emulator.state.image_versions.replication_seconds = 1.5  # the wait sees it replicating
    _, tables = run_with_tables(publish_encrypted_image_version, request)
    summary = outcomes(tables["publish-encrypted-image-version-summary"])
    assert (
        summary
        == as_done(plan)
        == [  # the feature's steps too, run in the gallery's run
            ("Register feature", "unchanged"),
            ("Register resource provider", "unchanged"),
            ("Create resource group", "created"),
            ("Create gallery", "created"),
            ("Create image definition", "created"),
            ("Create image version", "created"),
            ("Wait for replication", "waited for"),
            ("Verify image version encryption", "verified"),
        ]
    )
    rerun_is_unchanged(emulator, publish_encrypted_image_version, request, plan.flow)


# -- create-vm-from-encrypted-image -----------------------------------------------------------


def test_vm_plan_then_create_then_rerun(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    image = image_request(azure_block, azure, emulator)
    version = publish_encrypted_image_version(image.model_copy(update={"ensure_feature": False}))
    des = image.target_regions[0].encryption.os_disk_encryption_set  # type: ignore[union-attr]
    request = VmFromImageRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-plan-img",
        location="westeurope",
        vm_name="vm-plan",
        image_version_id=version.id,
        os_disk_encryption_set_id=des,
        data_disk_encryption_set_ids=[des],
        ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB test",
    )
    plan, tables = planned(emulator, create_vm_from_encrypted_image, request)
    assert outcomes(tables["create-vm-from-encrypted-image-plan"]) == [
        ("Create network resources", "would create"),
        ("Create network resources", "would create"),
        ("Create the VM with encrypted disks", "would create"),
        ("Verify the VM's disk encryption", "would verify"),
    ]
    _, tables = run_with_tables(create_vm_from_encrypted_image, request)
    assert outcomes(tables["create-vm-from-encrypted-image-summary"]) == [
        ("Create network resources", "created"),
        ("Create network resources", "created"),
        ("Create the VM with encrypted disks", "created"),
        ("Verify the VM's disk encryption", "verified"),
    ]
    rerun_is_unchanged(emulator, create_vm_from_encrypted_image, request, plan.flow)
    emulator.arm.configure_feature("Microsoft.Compute", "EncryptionAtHost", polls=1)
    host = request.model_copy(update={"vm_name": "vm-host", "enable_encryption_at_host": True})
    plan, _ = planned(emulator, create_vm_from_encrypted_image, host)
    assert [s.said() for s in plan.steps[:2]] == [
        "would register (NotRegistered)",
        "would wait for",
    ]


# -- revocation-drill -------------------------------------------------------------------------


def test_drill_plan_then_drill(
    azure: AzureClients,
    emulator: Emulator,
    drilled: dict[str, Any],  # noqa: F811 (the drill tests' fixture)
) -> None:
    request = RevocationDrillRequest(
        azure_credentials_block=drilled["block"],
        key_id=drilled["key"],
        confirm="k",
        timeout_minutes=0.2,
    )
    plan, tables = planned(emulator, revocation_drill, request)
    assert outcomes(tables["revocation-drill-plan"]) == [
        ("Find the subscriptions", "read"),
        ("Discover resources", "read"),
        ("Find the key's dependents", "found"),
        ("Restore a crashed drill's revocation", "exists, unchanged"),
        ("Revoke key access", "would revoke"),
        ("Prove the dependent fails", "would verify"),
        ("Prove the dependent fails", "would verify"),
        ("Restore key access", "would update"),
        ("Prove the dependent recovers", "would start"),
        ("Prove the dependent recovers", "would verify"),
    ]
    assert all(props.enabled for props in key_versions(azure, drilled))
    _, tables = run_with_tables(revocation_drill, request)
    # the same rows; the run restores a crashed drill's revocation between its reads
    assert sorted(outcomes(tables["revocation-drill-summary"])) == sorted(as_done(plan))


# -- prepare-cross-tenant-disk-encryption-set -------------------------------------------------


def test_cross_tenant_plan_then_set_up_then_rerun(
    azure_block: str,
    emulator: Emulator,
    customer: Customer,  # noqa: F811 (the cross-tenant tests' fixture)
) -> None:
    request = CrossTenantDesRequest(**xt_request(azure_block))
    flow = prepare_cross_tenant_disk_encryption_set
    plan, tables = planned(emulator, flow, request.model_copy(update={"mode": "check"}))
    assert outcomes(tables[f"{plan.flow}-plan"]) == [
        ("Create resource group", "would create"),
        ("Register the multi-tenant app", "would create"),
        ("Create a user-assigned managed identity", "would create"),
        ("Federate the identity with the app", "would create"),
        ("Install the app in the customer's tenant", "would create"),
        ("Create resource group", "would create"),
        ("Create key vault", "would create"),
        ("Create key vault", "would grant"),
        ("Create key", "would create"),
        ("Grant the app's service principal the key", "would grant"),
        ("Create disk encryption set", "would create"),
        ("Check both sides of the cross-tenant set", "would verify"),
    ]
    assert not emulator.state.entra.apps.applications
    _, tables = run_with_tables(flow, request)
    done = outcomes(tables[f"{plan.flow}-summary"])
    assert [
        row for row in as_done(plan) if row[0] != "Create a user-assigned managed identity"
    ] == [row for row in done if row[0] != "Create a user-assigned managed identity"]
    rerun_is_unchanged(emulator, flow, request, plan.flow)


# -- release-pipeline -------------------------------------------------------------------------


def test_pipeline_plan_is_its_children_plans_then_it_runs_them_once(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    request = pipeline_request(azure_block, managed_image(azure, "westeurope"), "subflows")
    plan, tables = planned(emulator, release_pipeline, request)
    rows = outcomes(tables["release-pipeline-plan"])
    des = "prepare-disk-encryption-set: "
    assert rows == 2 * [
        (f"{des}Create resource group", "exists, unchanged"),
        (f"{des}Create key vault", "would create"),
        (f"{des}Create key", "would create"),
        (f"{des}Create disk encryption set", "would create"),
        (f"{des}Grant the set's identity access to the key", "would grant"),
    ] + [
        ("publish-encrypted-image-version", "would run"),
        ("create-encrypted-aks-cluster", "would run"),
        ("add-encrypted-node-pool", "would run"),
    ]
    assert plan.steps[-3].resource == request.image_request(
        request.set_ids(emulator.identity.subscription_id)
    ).version_id(emulator.identity.subscription_id)
    result, tables = run_with_tables(release_pipeline, request)
    ran = ran_children(result, request, tables)
    plan, _ = planned(emulator, release_pipeline, request)
    assert plan.writes == [], [s.row() for s in plan.writes]
    assert {s.step.split(": ")[0] for s in plan.steps} == set(CHILDREN)
    again, tables = run_with_tables(release_pipeline, request)  # the re-run adopts it all
    assert again == result
    assert [(row["step"], row["resource"]) for row in tables["release-pipeline-summary"]] == ran
    assert count(emulator, "Microsoft.Compute/diskEncryptionSets") == 2
    assert count(emulator, "Microsoft.Compute/galleries/images/versions") == 1
    assert len(emulator.requests.find("PUT", "versions/1.0.0$")) == 1


# -- inventory-customer-managed-keys, key-blast-radius (read-only) ----------------------------


def test_read_only_flows_plan_their_report_files_only(
    azure_block: str, emulator: Emulator, tmp_path: Path
) -> None:
    request = InventoryRequest(azure_credentials_block=azure_block, report_dir=str(tmp_path))
    plan, tables = planned(emulator, inventory_customer_managed_keys, request)
    assert [s.said() for s in plan.steps] == [
        "would write (the CSV, JSON and OSCAL report and this run's history entry)"
    ]
    assert plan.steps[0].resource == str(tmp_path) and not list(tmp_path.iterdir())
    bare = request.model_copy(update={"report_dir": None})
    assert planned(emulator, inventory_customer_managed_keys, bare)[0].steps == []
    before = len(emulator.requests.find())
    blast = BlastRadiusRequest(
        azure_credentials_block=azure_block, key_id="https://kv-x.vault.azure.net/keys/k"
    )
    plan, tables = planned(emulator, key_blast_radius, blast)
    assert (plan.flow, plan.steps, tables["key-blast-radius-plan"]) == ("key-blast-radius", [], [])
    assert len(emulator.requests.find()) == before
