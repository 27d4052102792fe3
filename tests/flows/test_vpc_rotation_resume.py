"""rotate-vpc-root-key run again for the same rotation (a crash after the rotation, a retry,
a resumed run, hours later): Key Protect keys carry no tags, so, as in the fleet rotation,
the rotation's UTC day stands for its id. A key rotated since that day began is verified,
never rotated again (its plan says so); a rotation for a later day rotates, once per hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.runtime import flow_run

from byok.errors import InvalidRequest
from byok.ibm_vpc import VpcRotationRequest
from clients.ibm import IBMClients
from emulator.server import Emulator
from emulator.services.keyprotect.models import Key
from flows.ibm_vpc_image import rotate_vpc_root_key_flow
from tests.flows.test_fleet_rotation_aks_ibm import BUCKET, vpc_image
from tests.helpers import as_plan, run_with_tables, write_requests

FLOW, ROTATE, VERIFY = (
    "rotate-vpc-root-key",
    "Rotate the root key",
    "Verify VPC re-wrapped its images",
)
RESUMED = "rotated already by this rotation, verify only"


def rotated_earlier(key: Key, hours: float) -> None:
    """Key Protect's lastRotateDate (and its hour rule) moved `hours` back: what a re-run
    that much later sees (the emulator's clock only moves forward; the flow's hour rule
    reads this machine's)."""
    assert key.rotated_at is not None
    key.rotated_at -= hours * 3600
    moment = datetime.fromtimestamp(key.rotated_at, UTC)
    key.last_rotated = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def said(tables: dict[str, list[dict[str, str]]], kind: str) -> list[tuple[str, str]]:
    return [(r["step"], r["outcome"]) for r in tables[f"{FLOW}-{kind}"]]


def test_a_rerun_of_the_same_rotation_verifies_and_a_later_day_rotates(
    ibm_block: str,
    ibm: IBMClients,
    emulator: Emulator,
    ibm_grant: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = emulator.ibm_identity
    kp = ibm.key_protect(ids.key_protect_instance)
    ibm.cos().create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    root, image_crn = vpc_image(ibm, kp, ibm_grant, tmp_path, ids.key_protect_instance)
    assert emulator.state is not None
    key = emulator.state.keyprotect.instances[ids.key_protect_instance].keys[root["id"]]
    # the run was scheduled two hours ago: a re-run two hours after it rotated is its day
    scheduled = datetime.now(UTC) - timedelta(hours=2)
    monkeypatch.setitem(flow_run.FIELDS, "scheduled_start_time", lambda: scheduled)
    asked = VpcRotationRequest(
        ibm_credentials_block=ibm_block,
        key_protect_instance_id=ids.key_protect_instance,
        root_key=root["id"],
        timeout_minutes=0.2,
        poll_seconds=0.05,
    )
    v1 = key.latest.id
    first = rotate_vpc_root_key_flow(asked)
    v2 = key.latest.id
    assert (first.rotated, first.previous_version, first.key_version) == (True, v1, v2) != v1

    # two hours later, the same rotation again: its plan and its run verify, nothing rotates
    rotated_earlier(key, hours=2)
    before = len(emulator.requests)
    plan, tables = run_with_tables(rotate_vpc_root_key_flow, as_plan(asked))
    assert [s.row() for s in plan.steps] == tables[f"{FLOW}-plan"]
    (rotate, verify) = said(tables, "plan")
    assert rotate[0] == ROTATE and rotate[1].startswith(f"exists, unchanged ({RESUMED}: ")
    assert f"version {v2}, rotated at {key.last_rotated[:19]}" in rotate[1]
    assert f"by the rotation of {scheduled.date()}" in rotate[1]
    assert verify == (VERIFY, "would verify (1 registration(s), 1 image(s))")
    again, tables = run_with_tables(rotate_vpc_root_key_flow, asked)
    assert write_requests(emulator, before) == [] and [v.id for v in key.versions] == [v1, v2]
    assert (again.rotated, again.previous_version, again.key_version) == (False, None, v2)
    assert [(i.resource_crn, i.key_version, i.status) for i in again.images] == [
        (image_crn, v2, "available")
    ]
    (rotate, verify) = said(tables, "summary")
    assert rotate[0] == ROTATE and rotate[1].startswith(f"unchanged ({RESUMED}: version {v2}")
    assert verify == (VERIFY, f"verified (1 registration(s) on version {v2}, 1 image(s) available)")

    # a rotation for a later day (named as the fleet names its rotations) rotates; one for
    # the day after, within the hour, is refused before any write (Key Protect's hour)
    later = asked.model_copy(update={"rotation_id": f"vpc-{scheduled + timedelta(days=1):%Y%m%d}"})
    result = rotate_vpc_root_key_flow(later)
    v3 = key.latest.id
    assert (result.rotated, result.previous_version, result.key_version) == (True, v2, v3) != v2
    assert [i.key_version for i in result.images] == [v3]
    after = asked.model_copy(update={"rotation_id": f"{scheduled + timedelta(days=2):%Y-%m-%d}"})
    before = len(emulator.requests)
    with pytest.raises(InvalidRequest, match="one rotation per hour"):
        rotate_vpc_root_key_flow(after)
    assert write_requests(emulator, before) == [] and len(key.versions) == 3


def test_a_rotation_id_must_end_in_its_day() -> None:
    ids = {"key_protect_instance_id": "kp", "root_key": "k"}
    for rotation_id in ("fleet-0a1b2c3d4e-20261202", "20261202", "2026-12-02"):
        asked = VpcRotationRequest(**ids, rotation_id=rotation_id)
        assert asked.began(datetime.now(UTC)) == datetime(2026, 12, 2, tzinfo=UTC)
    scheduled = datetime(2026, 12, 3, 23, 59, tzinfo=UTC)
    assert VpcRotationRequest(**ids).began(scheduled) == datetime(2026, 12, 3, tzinfo=UTC)
    for bad in ("q4", "fleet-20261302", "2026120"):
        with pytest.raises(InvalidRequest, match=rf"^request.rotation_id = '{bad}': must end in"):
            rotate_vpc_root_key_flow({**ids, "rotation_id": bad})  # type: ignore[arg-type]
