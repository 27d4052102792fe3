"""VPC root-key rotation steps: rotate (at most once per hour; a lost answer is checked by
reading the key again), then prove through Key Protect's registrations and the images' state
that VPC re-wrapped every image itself. A key rotated since the rotation's day began was
rotated by this rotation (Key Protect keys carry no tags: the fleet's rule): a re-run
verifies, never rotates again."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from blocks.ibm import IBMCloudCredentials
from blocks.secrets import decode_root_material
from byok.errors import InvalidRequest, OperationFailed, PropagationTimedOut
from byok.ibm_vpc import (
    RegisteredImage,
    VpcRotationRequest,
    VpcRotationResult,
    check_rotation_due,
    rotated_since,
)
from byok.ibm_writes import create_once
from byok.outcomes import Change
from clients.ibm import IBMClients, KeyProtectClient
from clients.key_protect_keys import find_root_key
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES

RESUMED = "rotated already by this rotation, verify only"


def rotatable(kp: KeyProtectClient, request: VpcRotationRequest) -> tuple[dict[str, Any], str]:
    """The root key, and `RESUMED` with the version and when, if this rotation rotated it
    already (its day began before the key's last rotation); "" if it may rotate now: not
    within the hour after its last rotation, and an imported key only with new material."""
    key = find_root_key(kp, request.root_key)
    if key is None:
        raise InvalidRequest("root_key", request.root_key, "no such root key")
    now = datetime.now(UTC)
    began = request.began(flow_run.scheduled_start_time or now)
    if (done := rotated_since(key.get("lastRotateDate"), began)) is not None:
        at, version = done.isoformat(), key["keyVersion"]["id"]
        return (
            key,
            f"{RESUMED}: version {version}, rotated at {at} by the rotation of {began.date()}",
        )
    check_rotation_due(request.root_key, key.get("lastRotateDate"), now)
    if key.get("imported") and not request.root_key_material_block:
        raise InvalidRequest(
            "root_key_material_block",
            None,
            "the root key was imported: rotating it needs the new material (a Secret block)",
        )
    return key, ""


@task(name="Rotate the root key", **STEP_RETRIES)
def rotate_vpc_root_key(
    credentials: IBMCloudCredentials, request: VpcRotationRequest
) -> tuple[str, str | None, str]:
    """Rotate (refused within the hour after the last rotation, before any write), unless
    this rotation did already (old: None); after a lost answer the key is read again and a
    new version counts as done. (crn, old, new)."""
    kp = IBMClients.of(credentials).key_protect(request.key_protect_instance_id)
    key, resumed = rotatable(kp, request)
    if resumed:
        report(f"root key {key['name']}", None, note=resumed)
        return str(key["crn"]), None, str(key["keyVersion"]["id"])
    material = request.root_key_material_block
    payload = decode_root_material(material) if key.get("imported") and material else None
    previous = key["keyVersion"]["id"]

    def rotated() -> dict[str, Any] | None:
        found = kp.get_key(key["id"])
        return found if found["keyVersion"]["id"] != previous else None

    def rotate() -> dict[str, Any]:
        kp.rotate(key["id"], payload)
        return kp.get_key(key["id"])

    after = create_once(rotate, rotated, f"rotation of {key['name']}")
    version = Change(field="version", old=previous, new=after["keyVersion"]["id"])
    report(f"root key {key['name']}", "rotate", changes=[version])
    return str(key["crn"]), str(previous), str(after["keyVersion"]["id"])


@task(name="Verify VPC re-wrapped its images", **STEP_RETRIES)
def verify_vpc_rewrap(
    credentials: IBMCloudCredentials,
    instance_id: str,
    key_crn: str,
    version: str,
    timeout: float,
    interval: float,
) -> list[RegisteredImage]:
    """Wait until every registration of the key reports `version` (VPC re-wraps by itself),
    then check each registered image is still `available`."""
    clients = IBMClients.of(credentials)
    kp, vpc = clients.key_protect(instance_id), clients.vpc()
    key_id = key_crn.rsplit(":", 1)[-1]
    deadline = time.monotonic() + timeout
    while True:
        registrations = kp.registrations(key_id)
        stale = [r["resourceCrn"] for r in registrations if r["keyVersion"]["id"] != version]
        if not stale:
            break
        if time.monotonic() > deadline:
            raise PropagationTimedOut(key_crn, f"still on an older version: {', '.join(stale)}")
        time.sleep(interval)
    images = []
    for registration in registrations:
        crn = registration["resourceCrn"]
        if ":image:" not in crn:
            continue
        image = vpc.get_image(id=crn.rsplit(":", 1)[-1]).get_result()
        if image["status"] != "available":
            raise OperationFailed(crn, f"{image['status']} after the rotation")
        images.append(
            RegisteredImage(resource_crn=crn, key_version=version, status=image["status"])
        )
    note = f"{len(registrations)} registration(s) on version {version}, {len(images)} image(s)"
    report(key_crn, "verify", note=note + " available")
    return images


@task(name="Plan the root key rotation", **STEP_RETRIES)
def plan_vpc_rotation(credentials: IBMCloudCredentials, request: VpcRotationRequest) -> None:
    """What rotate-vpc-root-key would do: rotate the key (refused as the run would be; not
    if this rotation rotated it already), then verify each registration of it."""
    kp = IBMClients.of(credentials).key_protect(request.key_protect_instance_id)
    key, resumed = rotatable(kp, request)
    step, name = rotate_vpc_root_key.name, f"root key {key['name']}"
    if resumed:
        report(name, None, step=step, note=resumed, planned=True)
    else:
        version = Change(field="version", old=key["keyVersion"]["id"], new="(new version)")
        report(name, "rotate", step=step, changes=[version], planned=True)
    registrations = kp.registrations(key["id"])
    images = sum(":image:" in r["resourceCrn"] for r in registrations)
    note = f"{len(registrations)} registration(s), {images} image(s)"
    report(key["crn"], "verify", step=verify_vpc_rewrap.name, note=note, planned=True)


@task(name="Publish the rotation")
def publish_vpc_rotation(result: VpcRotationResult) -> VpcRotationResult:
    """A markdown artifact: the versions and each image's state."""
    lines = [f"# Rotated {result.root_key_crn}", ""]
    if result.rotated:
        lines += [f"Version {result.previous_version} → {result.key_version}", ""]
    else:
        lines += [f"Version {result.key_version} ({RESUMED})", ""]
    lines += [f"- {i.resource_crn}: {i.status}, key version {i.key_version}" for i in result.images]
    create_markdown_artifact("\n".join(lines), key="vpc-key-rotation")
    return result
