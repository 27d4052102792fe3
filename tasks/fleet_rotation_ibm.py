"""Fleet rotation steps for IBM Cloud: read each account's root keys and images (the
inventory's read), plan, then per root key rotate (once per hour at most), rewrap and record
every classic image's wrapped DEK, and verify VPC re-wrapped its images."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.runtime import flow_run

from blocks.ibm import IBMCloudCredentials
from byok.azure_errors import one_line
from byok.errors import ResourceError, VerificationFailed
from byok.ibm_vpc import VpcRotationRequest, rotation_began
from byok.rotation import FleetRotationRequest, RotationRow, Status
from byok.rotation_ibm import IbmPlannedKey, IbmRotationPlan, plan_ibm
from clients.ibm import IBMClients
from clients.ibm_cos_objects import encrypted_object
from tasks.events import emit_byok_event
from tasks.ibm_rotation import record_wrapped_dek, rewrap_dek
from tasks.ibm_vpc_rotation import rotate_vpc_root_key, verify_vpc_rewrap
from tasks.inventory_ibm import read_ibm_account
from tasks.run_lock import resource_lock


@task(name="Plan the IBM root keys")
def plan_ibm_keys(request: FleetRotationRequest) -> IbmRotationPlan:
    """Each account's root keys and images read, and which keys rotate (a key rotated since
    the rotation's scheduled day began is finished, not rotated again)."""
    accounts = [
        (
            scope,
            read_ibm_account(IBMCloudCredentials.load_saved(scope.ibm_credentials_block), scope),
        )
        for scope in request.ibm_accounts
    ]
    now = datetime.now(UTC)
    return plan_ibm(accounts, request, now, rotation_began(flow_run.scheduled_start_time or now))


@task(name="Rotate the root key", task_run_name="Rotate {key.crn}")
def rotate_ibm_key(key: IbmPlannedKey, request: FleetRotationRequest) -> list[RotationRow]:
    """One run per key: rotate (unless finishing), then rewrap and record each classic
    image's DEK still behind, and verify VPC re-wrapped its images; a failure is its row."""
    credentials = IBMCloudCredentials.load_saved(key.ibm_credentials_block)
    version = key.version
    try:
        with resource_lock(key.crn, wait=request.wait_for_other_run):
            if key.rotate:
                asked = VpcRotationRequest(
                    ibm_credentials_block=key.ibm_credentials_block,
                    key_protect_instance_id=key.instance_id,
                    root_key=key.key_id,
                    root_key_material_block=key.material_block,
                )
                version = rotate_vpc_root_key(credentials, asked)[2]
            rows = key.rows(Status.VERIFIED)
            for row, image in zip(rows[1:], key.images, strict=False):
                _rewrap(credentials, key, image.bucket, image.key, version, row)
    except Exception as exc:  # the key's failure is its row; its images are skipped
        failed = key.rows(Status.SKIPPED)
        failed[0] = failed[0].model_copy(update={"status": Status.FAILED, "reason": one_line(exc)})
        for row in failed[1:]:
            row.reason = "the key did not rotate"
        return failed
    rows[0] = rows[0].model_copy(update={"status": Status.ROTATED, "version": version})
    vpc = rows[1 + len(key.images) :]
    if vpc:
        timeout = request.pickup_timeout_minutes * 60
        try:
            verify_vpc_rewrap(
                credentials, key.instance_id, key.crn, version, timeout, request.poll_seconds
            )
        except Exception as exc:  # each image of the key shares the reason
            for row in vpc:
                row.status, row.reason = Status.FAILED, one_line(exc)
    for row in rows[1:]:
        row.version = version
    if all(r.status in (Status.ROTATED, Status.VERIFIED) for r in rows):
        emit_byok_event(
            "key.rotated",
            key.crn,
            "ibm-root-key",
            related={f"{r.kind}-{i}": r.dependent_id for i, r in enumerate(rows[1:], 1)},
            payload={"new_version": version, "rotated": key.rotate},
        )
    return rows


def _rewrap(
    credentials: IBMCloudCredentials,
    key: IbmPlannedKey,
    bucket: str,
    name: str,
    version: str,
    row: RotationRow,
) -> None:
    """Rewrap one classic image's DEK under `version` and record it (nothing when it is
    already), into `row` (failed with the reason: the other images go on)."""
    cos: Any = key.cos_instance_id  # None: the block's HMAC credentials
    try:
        stored = encrypted_object(IBMClients.of(credentials).cos(cos), bucket, name)
        if stored is None:
            raise ResourceError(row.dependent_id, "the encrypted image is gone")
        if stored.key_version == version:
            row.reason = "already on the new version"
            return
        rewrapped = rewrap_dek(credentials, key.instance_id, key.key_id, stored.wrapped_dek)
        if rewrapped.version != version:
            raise VerificationFailed(
                row.dependent_id, f"rewrapped under {rewrapped.version}, not {version}"
            )
        record_wrapped_dek(credentials, cos, bucket, name, key.crn, rewrapped)
    except Exception as exc:  # one image's failure is its row
        row.status, row.reason = Status.FAILED, one_line(exc)
