"""Plan before apply (`plan_only`) and honest re-run output for the IBM classic flows: a plan
reads and writes nothing, names what each step would do, and the run then does it; a re-run
says `unchanged` for every step and writes nothing; the encrypted image emits its event.

What counts as a write (`tests.helpers.write_requests`): every PUT, PATCH and DELETE (COS
objects and buckets, IAM), and every POST but IAM's token exchange (`POST /identity/token`) and Key
Protect's unwrap (`POST /api/v2/keys/{id}/actions/unwrap`, a read of the DEK). Key Protect's
other actions (wrap, rewrap, rotate) count as writes; SoftLayer's REST reads here are GETs,
its POSTs (createFromIcos, copyToIcos, generateOrderTemplate, createObject) count as writes."""

from __future__ import annotations

import time

import pytest

from byok.ibm_dek import META_KEY_VERSION
from byok.outcomes import DONE, Plan
from byok.validation import InvalidRequest
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.server import Emulator
from flows.ibm_image import provision_encrypted_ibm_image
from flows.ibm_rotation import rotate_ibm_root_key
from tests.flows.test_events import byok_events
from tests.flows.test_ibm_image import (  # noqa: F401 (quick_softlayer: autouse fixture)
    BUCKET,
    IMAGE,
    OBJECT,
    quick_softlayer,
    request,
)
from tests.flows.test_ibm_rotation import provision, rotation, stored_metadata
from tests.helpers import as_plan, outcomes, run_with_tables, write_requests

ROOT, DEK = "Ensure the Key Protect root key", "Generate and wrap the data encryption key"
AUTHORIZE = "Authorize Cloud Block Storage to read Key Protect"
BUCKET_STEP, SOURCE = (
    "Ensure the regional COS bucket",
    "Export or locate the unencrypted image in COS",
)
UPLOAD, SERVICE_ID = "Upload the encrypted image to COS", "Ensure the import service ID"
API_KEY = "Grant the import service ID and create its API key"
IMPORT, RETIRE = "Import the encrypted image", "Delete the import API key"
ORDER = "Order a virtual server from the template"


def test_image_plan_writes_nothing_and_the_run_does_what_it_said(
    ibm_block: str, emulator: Emulator
) -> None:
    before = len(emulator.requests)
    plan, tables = run_with_tables(
        provision_encrypted_ibm_image, as_plan(request(ibm_block, emulator))
    )
    assert write_requests(emulator, before) == []
    assert isinstance(plan, Plan) and plan.flow == "provision-encrypted-ibm-image"
    assert [s.row() for s in plan.steps] == tables["provision-encrypted-ibm-image-plan"]
    assert outcomes(tables["provision-encrypted-ibm-image-plan"]) == [
        (ROOT, "would create"),
        (DEK, "would generate"),
        (AUTHORIZE, "would grant"),
        (BUCKET_STEP, "would create"),
        (SOURCE, "would export"),
        (UPLOAD, "would upload"),
        (SERVICE_ID, "would create"),
        (API_KEY, "would grant"),
        (API_KEY, "would grant"),
        (API_KEY, "would create"),
        (IMPORT, "would import"),
        (RETIRE, "would delete"),
        (ORDER, "would create"),
    ]
    state = emulator.state
    assert state is not None
    assert not [t for t in state.softlayer.templates.values() if t.name == IMAGE]
    assert not any(i.keys for i in state.keyprotect.instances.values())
    assert not state.iam.service_ids and not state.softlayer.guests

    _, tables = run_with_tables(provision_encrypted_ibm_image, request(ibm_block, emulator))
    done = {
        (row["step"], row["resource"], row["outcome"].split(" (")[0])
        for row in tables["provision-encrypted-ibm-image-summary"]
    }
    for step in plan.writes:  # each would-… row happened as planned, on the same resource
        assert (step.step, step.resource, DONE[str(step.verb)]) in done, step.row()


def test_image_rerun_says_unchanged_writes_nothing_and_emits_its_event(
    ibm_block: str, emulator: Emulator
) -> None:
    since = time.time() - 1
    first, _ = run_with_tables(provision_encrypted_ibm_image, request(ibm_block, emulator))
    before = len(emulator.requests)
    again, tables = run_with_tables(provision_encrypted_ibm_image, request(ibm_block, emulator))
    assert again.template_id == first.template_id
    assert write_requests(emulator, before) == []
    summary = tables["provision-encrypted-ibm-image-summary"]
    assert {row["outcome"].split(" (")[0] for row in summary} == {"unchanged"}, summary
    assert outcomes(summary) == [
        (ROOT, "unchanged"),
        (AUTHORIZE, "unchanged"),
        (BUCKET_STEP, "unchanged"),
        ("Wait for the image template", "unchanged"),
        (RETIRE, "unchanged"),
        (ORDER, "unchanged"),
        ("Wait until the virtual server is provisioned", "unchanged"),
    ]
    plan, _ = run_with_tables(provision_encrypted_ibm_image, as_plan(request(ibm_block, emulator)))
    assert plan.writes == [], [s.row() for s in plan.steps]
    assert write_requests(emulator, before) == []

    events = byok_events(since, ids=[first.template_global_identifier])
    assert [e["event"] for e in events] == ["byok.resource.encrypted"] * 2  # one per run
    related = {r["prefect.resource.role"]: r.get("byok.id") for r in events[0]["related"]}
    related = {role: rid for role, rid in related.items() if rid}
    assert related == {"key": first.root_key_crn, "cos-object": first.object_uri}
    assert events[0]["resource"]["byok.kind"] == "image-template"


def test_image_plan_after_a_crash_adopts_what_the_crashed_run_left(
    ibm_block: str, emulator: Emulator
) -> None:
    crash = emulator.faults.add(
        Fault("status", method="POST", path="/createFromIcos", status=400, code="InjectedCrash")
    )
    with pytest.raises(Exception, match="InjectedCrash"):
        provision_encrypted_ibm_image(request(ibm_block, emulator, order=None))
    assert crash.fired == 1
    before = len(emulator.requests)
    plan, _ = run_with_tables(
        provision_encrypted_ibm_image, as_plan(request(ibm_block, emulator, order=None))
    )
    assert write_requests(emulator, before) == []
    assert [(s.step, s.said().split(" (")[0]) for s in plan.steps] == [
        (ROOT, "exists, unchanged"),
        (DEK, "would adopt"),
        (AUTHORIZE, "exists, unchanged"),
        (BUCKET_STEP, "exists, unchanged"),
        (UPLOAD, "exists, unchanged"),
        (SERVICE_ID, "exists, unchanged"),
        (API_KEY, "exists, unchanged"),
        (API_KEY, "exists, unchanged"),
        (API_KEY, "would create"),
        (IMPORT, "would import"),
        (RETIRE, "would delete"),
    ]
    _, tables = run_with_tables(
        provision_encrypted_ibm_image, request(ibm_block, emulator, order=None)
    )
    done = outcomes(tables["provision-encrypted-ibm-image-summary"])
    assert (DEK, "adopted") in done and (IMPORT, "imported") in done
    assert (UPLOAD, "uploaded") not in done  # the crashed run's object, kept


ROTATE, REWRAP = "Rotate the Key Protect root key", "Rewrap the DEK with the latest key version"
RECORD = "Record the rewrapped DEK with the image"


def test_rotation_plan_then_rotation_then_refused_within_the_hour(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    image = provision(ibm_block, emulator, ibm)
    before = len(emulator.requests)
    request = rotation(ibm_block, emulator, image)
    plan, tables = run_with_tables(rotate_ibm_root_key, as_plan(request))
    assert write_requests(emulator, before) == []
    version = image.key_version
    assert [(s.step, s.said()) for s in plan.steps] == [
        (ROTATE, f"would rotate (version: {version} → (new version))"),
        (REWRAP, f"would rewrap (key_version: {version} → (new version); 1 DEK)"),
        (RECORD, f"would update (key_version: {version} → (new version))"),
    ]
    assert [s.row() for s in plan.steps] == tables["rotate-ibm-root-key-plan"]
    assert stored_metadata(ibm)[META_KEY_VERSION] == version

    result, tables = run_with_tables(rotate_ibm_root_key, request)
    new = result.key_version
    assert [(r["step"], r["outcome"]) for r in tables["rotate-ibm-root-key-summary"]] == [
        (REWRAP, f"unchanged (wrapped by the latest key version {version})"),
        (ROTATE, f"rotated (version: {version} → {new})"),
        (REWRAP, f"rewrapped (key_version: {version} → {new})"),
        (RECORD, f"updated (key_version: {version} → {new})"),
    ]
    assert stored_metadata(ibm)[META_KEY_VERSION] == new

    before = len(emulator.requests)
    with pytest.raises(InvalidRequest, match="Key Protect allows one rotation per hour"):
        rotate_ibm_root_key(as_plan(request))
    assert write_requests(emulator, before) == []


def test_rotation_plan_after_a_crash_finishes_without_rotating(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    image = provision(ibm_block, emulator, ibm)
    request = rotation(ibm_block, emulator, image)
    emulator.faults.add(
        Fault("status", "PUT", rf"^/{BUCKET}/{OBJECT}$", status=400, code="InjectedCrash")
    )
    with pytest.raises(Exception, match="InjectedCrash"):
        rotate_ibm_root_key(request)
    before = len(emulator.requests)
    plan, _ = run_with_tables(rotate_ibm_root_key, as_plan(request))
    assert write_requests(emulator, before) == []
    said = [(s.step, s.said().split(" (")[0]) for s in plan.steps]
    assert said == [
        (ROTATE, "exists, unchanged"),
        (REWRAP, "would rewrap"),
        (RECORD, "would update"),
    ]
    _, tables = run_with_tables(rotate_ibm_root_key, request)
    assert outcomes(tables["rotate-ibm-root-key-summary"]) == [
        (REWRAP, "rewrapped"),
        (RECORD, "updated"),
    ]
