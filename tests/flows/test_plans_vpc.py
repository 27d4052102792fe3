"""Plan before apply (`plan_only`) and honest re-run output for the IBM VPC flows: a plan
reads and writes nothing, names what each step would do, and the run then does it; a re-run
says `unchanged` for every step and writes nothing; a rotation's plan names the version it
replaces and the registrations it would verify; for the same rotation (its day) again it
only verifies, for a later one within the hour it is refused as the rotation is.

What counts as a write (`tests.helpers.write_requests`): every PUT, PATCH and DELETE, and
every POST but IAM's token exchange (`POST /identity/token`) and the other reads it lists. The
VPC flows make no other POST that reads:
VPC, IAM policy, COS and Key Protect reads (keys, registrations) are GETs and HEADs; Key
Protect's wrap and rotate, VPC's create_* and SoftLayer's copyToIcos count as writes."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.blocks.system import Secret

from byok.errors import InvalidRequest
from byok.ibm_vpc import VpcRotationRequest
from byok.outcomes import DONE, Plan
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.softlayer.models import SEED_TEMPLATE_ID
from emulator.services.vpc.models import VpcModel
from flows.ibm_vpc_image import provision_encrypted_vpc_image, rotate_vpc_root_key_flow
from tests.flows.test_ibm_vpc import BUCKET, IMAGE, request, state
from tests.flows.test_ibm_vpc import vpc as quick_vpc  # noqa: F401 (a fixture)
from tests.helpers import as_plan, run_with_tables, write_requests

pytestmark = pytest.mark.usefixtures("quick_vpc")  # the VPC with quick imports and boots

IMAGE_FLOW, ROTATION_FLOW = "provision-encrypted-vpc-image", "rotate-vpc-root-key"


def disk(directory: Path) -> Path:
    """A small raw disk with some data in it."""
    path = directory / "disk.raw"
    path.write_bytes(os.urandom(64 * 1024) + bytes(448 * 1024))
    return path


def vpc(emulator: Emulator) -> VpcModel:
    return state(emulator).vpc


def outcomes(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """(step, resource, outcome without its details) of each row."""
    return [(r["step"], r["resource"], r["outcome"].split(" (")[0]) for r in rows]


ROOT, PASSPHRASE = "Ensure the Key Protect root key", "Generate and wrap the LUKS passphrase"
KMS, COS = (
    "Authorize Cloud Block Storage to read Key Protect",
    ("Authorize the VPC image service to read COS"),
)
BUCKET_STEP, ENCRYPT = "Ensure the regional COS bucket", "Encrypt the image to qcow2 + LUKS"
CHECK, UPLOAD = "Check the encrypted image against the source", "Upload the encrypted image"
IMPORT, NETWORK = "Import the VPC image", "Ensure the VPC and subnet"
INSTANCE = "Create the VPC instance"
WAIT_IMAGE, WAIT_INSTANCE = "Wait for the VPC image", "Wait for the VPC instance"


def resources(emulator: Emulator) -> dict[str, str]:
    """How the rows name this test's resources."""
    ibm = emulator.ibm_identity
    return {
        "key": "root key vpc-root",
        "kms": f"server-protect → kms {ibm.key_protect_instance} (Reader)",
        "cos": f"is (images) → cloud-object-storage {ibm.cos_instance} (Reader)",
        "bucket": f"cos://us-south/{BUCKET}/",
        "object": f"cos://us-south/{BUCKET}/{IMAGE}.qcow2",
        "image": f"VPC image {IMAGE}",
    }


def test_image_plan_writes_nothing_and_the_run_does_what_it_said(
    ibm_block: str, emulator: Emulator, tmp_path: Path
) -> None:
    names = resources(emulator)
    before = len(emulator.requests)
    plan, tables = run_with_tables(
        provision_encrypted_vpc_image, as_plan(request(ibm_block, emulator, disk(tmp_path)))
    )
    assert write_requests(emulator, before) == []
    assert isinstance(plan, Plan) and plan.flow == IMAGE_FLOW
    assert [s.row() for s in plan.steps] == tables[f"{IMAGE_FLOW}-plan"]
    assert outcomes(tables[f"{IMAGE_FLOW}-plan"]) == [
        (ROOT, names["key"], "would create"),
        (KMS, names["kms"], "would grant"),
        (COS, names["cos"], "would grant"),
        (BUCKET_STEP, names["bucket"], "would create"),
        (PASSPHRASE, "LUKS passphrase", "would generate"),
        (ENCRYPT, "image.qcow2", "would encrypt"),
        (CHECK, "image.qcow2", "would verify"),
        (UPLOAD, names["object"], "would upload"),
        (IMPORT, names["image"], "would import"),
        (NETWORK, "VPC network byok-vpc", "would create"),
        (NETWORK, "VPC subnet byok-subnet", "would create"),
        (INSTANCE, "VPC instance byok-vsi", "would create"),
    ]
    assert not vpc(emulator).images and not vpc(emulator).instances and not vpc(emulator).vpcs

    _, tables = run_with_tables(
        provision_encrypted_vpc_image, request(ibm_block, emulator, disk(tmp_path))
    )
    done = outcomes(tables[f"{IMAGE_FLOW}-summary"])
    assert [(s.step, s.resource, DONE[str(s.verb)]) for s in plan.steps] == [
        row for row in done if not row[0].startswith("Wait for")
    ]
    waits = [row for row in done if row[0].startswith("Wait for")]
    assert [row[:2] for row in waits] == [
        (WAIT_IMAGE, names["image"]),
        (WAIT_INSTANCE, "VPC instance byok-vsi"),
    ]
    assert {row[2] for row in waits} <= {"waited for", "verified"}  # as quick as VPC was


def test_image_rerun_says_unchanged_and_writes_nothing(
    ibm_block: str, emulator: Emulator, tmp_path: Path
) -> None:
    names = resources(emulator)
    first, _ = run_with_tables(
        provision_encrypted_vpc_image, request(ibm_block, emulator, disk(tmp_path))
    )
    before = len(emulator.requests)
    again, tables = run_with_tables(
        provision_encrypted_vpc_image, request(ibm_block, emulator, disk(tmp_path))
    )
    assert again.image_id == first.image_id and again.instance_id == first.instance_id
    assert write_requests(emulator, before) == []
    expected = [
        (ROOT, names["key"], "unchanged"),
        (KMS, names["kms"], "unchanged"),
        (COS, names["cos"], "unchanged"),
        (BUCKET_STEP, names["bucket"], "unchanged"),
        (WAIT_IMAGE, names["image"], "verified"),
        (NETWORK, "VPC network byok-vpc", "unchanged"),
        (NETWORK, "VPC subnet byok-subnet", "unchanged"),
        (INSTANCE, "VPC instance byok-vsi", "unchanged"),
        (WAIT_INSTANCE, "VPC instance byok-vsi", "verified"),
    ]
    summary = tables[f"{IMAGE_FLOW}-summary"]
    assert outcomes(summary) == expected, summary

    plan, _ = run_with_tables(
        provision_encrypted_vpc_image, as_plan(request(ibm_block, emulator, disk(tmp_path)))
    )
    assert write_requests(emulator, before) == []
    assert plan.writes == [], [s.row() for s in plan.steps]
    assert [(s.step, s.resource) for s in plan.steps] == [row[:2] for row in expected[:-1]]
    assert plan.steps[4].said() == (
        f"would verify (available, id {first.image_id}: not re-encrypted)"
    )


def test_image_plan_after_a_crash_at_the_import_says_what_remains(
    ibm_block: str, emulator: Emulator, tmp_path: Path
) -> None:
    """The crashed run made the key, the authorizations, the bucket and the object: the plan
    says they exist, and that the image would be encrypted again (a new passphrase: the
    object is replaced) and imported."""
    names = resources(emulator)
    asked = request(ibm_block, emulator, disk(tmp_path), instance=None)
    emulator.faults.add(
        Fault("status", method="POST", path=r"^/v1/images$", status=400, code="InjectedCrash")
    )
    with pytest.raises(Exception, match="InjectedCrash"):
        provision_encrypted_vpc_image(asked)
    before = len(emulator.requests)
    plan, _ = run_with_tables(provision_encrypted_vpc_image, as_plan(asked))
    assert write_requests(emulator, before) == []
    assert [(s.step, s.said().split(" (")[0]) for s in plan.steps] == [
        (ROOT, "exists, unchanged"),
        (KMS, "exists, unchanged"),
        (COS, "exists, unchanged"),
        (BUCKET_STEP, "exists, unchanged"),
        (PASSPHRASE, "would generate"),
        (ENCRYPT, "would encrypt"),
        (CHECK, "would verify"),
        (UPLOAD, "would upload"),
        (IMPORT, "would import"),
    ]
    assert plan.steps[7].said() == "would upload (replaces the object)"
    _, tables = run_with_tables(provision_encrypted_vpc_image, asked)
    assert (IMPORT, names["image"], "imported") in outcomes(tables[f"{IMAGE_FLOW}-summary"])
    assert len(vpc(emulator).images) == 1


def test_rotation_plan_then_rotation_then_verify_only_or_refused_within_the_hour(
    ibm_block: str, emulator: Emulator, tmp_path: Path
) -> None:
    made = provision_encrypted_vpc_image(
        request(ibm_block, emulator, disk(tmp_path), instance=None)
    )
    rotation = VpcRotationRequest(
        ibm_credentials_block=ibm_block,
        key_protect_instance_id=emulator.ibm_identity.key_protect_instance,
        root_key="vpc-root",
        timeout_minutes=0.2,
        poll_seconds=0.05,
    )
    key_crn, old = made.root_key_crn, made.key_version
    before = len(emulator.requests)
    plan, tables = run_with_tables(rotate_vpc_root_key_flow, as_plan(rotation))
    assert write_requests(emulator, before) == []
    assert (
        isinstance(plan, Plan) and [s.row() for s in plan.steps] == tables[f"{ROTATION_FLOW}-plan"]
    )
    assert [(s.step, s.resource, s.said()) for s in plan.steps] == [
        ("Rotate the root key", "root key vpc-root",
         f"would rotate (version: {old} → (new version))"),
        ("Verify VPC re-wrapped its images", key_crn,
         "would verify (1 registration(s), 1 image(s))"),
    ]  # fmt: skip

    result, tables = run_with_tables(rotate_vpc_root_key_flow, rotation)
    new = result.key_version
    assert [(r["step"], r["outcome"]) for r in tables[f"{ROTATION_FLOW}-summary"]] == [
        ("Rotate the root key", f"rotated (version: {old} → {new})"),
        ("Verify VPC re-wrapped its images",
         f"verified (1 registration(s) on version {new}, 1 image(s) available)"),
    ]  # fmt: skip

    before = len(emulator.requests)
    plan, _ = run_with_tables(rotate_vpc_root_key_flow, as_plan(rotation))
    # the same rotation (its scheduled day) again: verified, not rotated twice
    resumed = "exists, unchanged (rotated already by this rotation, verify only"
    assert plan.steps[0].said().startswith(f"{resumed}: version {new}, rotated at ")
    tomorrow = f"vpc-{datetime.now(UTC) + timedelta(days=1):%Y%m%d}"
    with pytest.raises(InvalidRequest, match="one rotation per hour"):
        rotate_vpc_root_key_flow(as_plan(rotation.model_copy(update={"rotation_id": tomorrow})))
    assert write_requests(emulator, before) == []


def test_a_plan_names_the_export_download_and_passphrase_of_its_source(
    ibm_block: str, emulator: Emulator, tmp_path: Path
) -> None:
    """A classic template source: the plan would export it, then download the export; a
    passphrase from a Secret block would be wrapped (not generated)."""
    Secret(value="a-long-enough-passphrase").save("vpc-plan-passphrase", overwrite=True)
    asked = request(
        ibm_block,
        emulator,
        disk(tmp_path),
        source_file=None,
        source_template_id=SEED_TEMPLATE_ID,
        passphrase_block="vpc-plan-passphrase",
        instance=None,
    )
    before = len(emulator.requests)
    plan, _ = run_with_tables(provision_encrypted_vpc_image, as_plan(asked))
    assert write_requests(emulator, before) == []
    export = f"cos://us-south/{BUCKET}/exports/{IMAGE}-0.vhd"
    assert [(s.step, s.resource, s.said()) for s in plan.steps[4:7]] == [
        (PASSPHRASE, "LUKS passphrase", "would wrap (Secret block vpc-plan-passphrase)"),
        ("Export or locate the unencrypted image in COS", export,
         f"would export (template {SEED_TEMPLATE_ID})"),
        ("Download the source image to the spool", export, "would download"),
    ]  # fmt: skip
