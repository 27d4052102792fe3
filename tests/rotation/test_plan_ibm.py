"""The IBM part of the fleet rotation's plan, from an inventory snapshot: which root keys
rotate, which finish a rotation (images behind the latest version), which wait for Key
Protect's hour, and the rows of each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from byok.errors import InvalidRequest
from byok.inventory.ibm import CosImage, IbmAccountSnapshot
from byok.inventory.request import IbmAccountScope
from byok.parameters import parse_request
from byok.rotation import FleetRotationRequest, Status
from byok.rotation_ibm import plan_ibm

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
INSTANCE = "crn:v1:bluemix:public:kms:us-south:a/acct:11111111-1111-1111-1111-111111111111"
SCOPE = IbmAccountScope(ibm_credentials_block="ibm", cos_instance_id=None)


def key(n: int, version: str = "v2", rotated: datetime | None = None, **extra: Any) -> dict:
    key_id = f"0000000{n}-0000-0000-0000-000000000000"
    return {
        "id": key_id,
        "crn": f"{INSTANCE}:key:{key_id}",
        "instanceCrn": INSTANCE,
        "keyVersion": {"id": version, "creationDate": (NOW - timedelta(days=100)).isoformat()},
        "lastRotateDate": rotated.isoformat() if rotated else None,
        **extra,
    }


def snapshot(keys: list[dict], images: dict[int, list[str | None]], vpc: int = 0) -> Any:
    found = IbmAccountSnapshot(account_id="acct", region="us-south", root_keys=keys)
    for n, versions in images.items():
        found.cos_images += [
            CosImage(bucket="b", key=f"k{n}-{i}", root_key_crn=keys[n]["crn"], key_version=v)
            for i, v in enumerate(versions)
        ]
    if vpc:
        crn = "crn:v1:bluemix:public:is:us-south:a/acct::image:r006-1"
        found.registrations[keys[vpc]["id"]] = [{"resourceCrn": crn}]
    return found


def plan(found: Any, since: datetime | None = None, **fields: Any) -> Any:
    request = FleetRotationRequest(azure_credentials_block="a", **fields)
    return plan_ibm([(SCOPE, found)], request, NOW, since)


def test_keys_rotate_finish_or_wait_for_the_hour_with_their_images() -> None:
    keys = [
        key(0),  # images on v2: rotates
        key(1, rotated=NOW - timedelta(minutes=10)),  # images behind: finishes, no rotation
        key(2, rotated=NOW - timedelta(minutes=10)),  # rotated 10 minutes ago: waits
        key(3),  # protects nothing: not selected
        key(4, state=3),  # deactivated
        key(5),  # a VPC image only
    ]
    found = snapshot(keys, {0: ["v2", "v2"], 1: ["v1", "v2"], 2: ["v2"], 4: ["v2"]}, vpc=5)
    result = plan(found)
    by_key = {k.key_id[7]: (k.rotate, len(k.images), len(k.vpc_images)) for k in result.rotations}
    assert by_key == {"0": (True, 2, 0), "1": (False, 2, 0), "5": (True, 0, 1)}
    assert result.rotations[1].reason == "finishing: 1 wrapped DEK(s) behind version v2"
    reasons = {r.key_id.rsplit(":", 1)[-1][7]: (r.status, r.reason) for r in result.skipped}
    assert reasons["2"][0] == Status.SKIPPED and "one rotation per hour" in reasons["2"][1]
    assert reasons["4"] == (Status.SKIPPED, "the key is not active")
    rows = result.rows()
    kinds = sorted(r.kind for r in rows if r.status == Status.PLANNED)
    assert kinds == ["ibm-image"] * 4 + ["ibm-vpc-image"] + ["key"] * 3


def test_a_key_rotated_since_the_rotation_day_began_is_finished_not_rotated_again() -> None:
    day = NOW.replace(hour=0)
    keys = [
        key(0, rotated=NOW - timedelta(hours=3)),  # this rotation's, 3 hours ago
        key(1, rotated=day - timedelta(hours=2)),  # yesterday's: due again
        key(2, rotated=NOW - timedelta(minutes=10)),  # this rotation's, 10 minutes ago
    ]
    found = snapshot(keys, {0: ["v2"], 1: ["v2"], 2: ["v2"]})
    resumed = plan(found, since=day)
    by_key = {k.key_id[7]: (k.rotate, k.reason.split(":")[0]) for k in resumed.rotations}
    assert by_key == {"0": (False, "resuming"), "1": (True, "selected"), "2": (False, "resuming")}
    assert resumed.skipped == []
    assert {r.action for r in resumed.rows() if r.kind == "key"} >= {"finish rewrap to v2"}
    # without the rotation's day (no resumption), the hour rule holds the recent one back
    fresh = plan(found)
    assert [k.key_id[7] for k in fresh.rotations if k.rotate] == ["0", "1"]
    assert "one rotation per hour" in fresh.skipped[0].reason


def test_selection_by_crn_or_id_and_age() -> None:
    keys = [key(0), key(1)]
    found = snapshot(keys, {0: ["v2"], 1: ["v2"]})
    picked = plan(found, root_keys=[keys[1]["id"].upper()])
    assert [k.key_id for k in picked.rotations] == [keys[1]["id"]]
    young = plan(found, older_than_days=365)
    assert young.rotations == [] and {r.reason for r in young.skipped} == {
        "not old enough, nor near expiry"
    }
    with pytest.raises(InvalidRequest, match=r"root_keys\[0\] = 'kms-key': must be a Key"):
        parse_request(
            FleetRotationRequest, {"azure_credentials_block": "a", "root_keys": ["kms-key"]}
        )


def test_an_imported_root_key_rotates_only_with_its_new_material() -> None:
    keys = [key(0, imported=True), key(1, imported=True)]
    found = snapshot(keys, {0: ["v2"], 1: ["v2"]})
    result = plan(found, root_key_material_blocks={keys[1]["crn"]: "kp-new-material"})
    assert [(k.key_id, k.material_block) for k in result.rotations] == [
        (keys[1]["id"], "kp-new-material")
    ]
    (failed,) = result.skipped
    assert failed.key_id == keys[0]["crn"] and failed.status == Status.FAILED
    assert "root_key_material_blocks" in failed.reason
    with pytest.raises(InvalidRequest, match=r"root_key_material_blocks = 'k1': keys must be"):
        parse_request(
            FleetRotationRequest,
            {"azure_credentials_block": "a", "root_key_material_blocks": {"k1": "b"}},
        )
