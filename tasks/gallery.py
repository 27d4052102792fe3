"""Gallery steps: gallery and image definition (get or create), the image version (create
or adopt), replication with per-region progress, verification."""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from azure.core.exceptions import HttpResponseError
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from blocks.azure import AzureCredentials
from byok.azure_errors import error_code, or_none
from byok.errors import OperationFailed, ResourceError, VerificationFailed
from byok.polling import poll_until
from byok.sdk_values import text
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from tasks.artifacts import artifact_key
from tasks.retry import STEP_RETRIES


class RegionResult(BaseModel):
    """A published region and its encryption."""

    name: str
    replica_count: int
    os_disk_encryption_set_id: str | None
    data_disk_encryption_set_ids: dict[int, str]
    replication_state: str


class ImageVersionResult(BaseModel):
    """The published version, region by region."""

    id: str
    name: str
    regions: list[RegionResult]


def read_version(
    clients: AzureClients, rg: str, gallery: str, image: str, version: str
) -> Any | None:
    """The version with its replication status, or None."""
    return or_none(
        lambda: clients.compute().gallery_image_versions.get(
            rg, gallery, image, version, expand="ReplicationStatus"
        )
    )


def _region_key(name: str) -> str:
    return name.lower().replace(" ", "")


def encryption_of(version: Any) -> dict[str, dict[str, Any]]:
    """Region → {os: set id or None, data: {lun: set id}} as the version reports it."""
    found = {}
    for region in version.properties.publishing_profile.target_regions or []:
        enc = region.encryption
        os_id = enc.os_disk_image.disk_encryption_set_id if enc and enc.os_disk_image else None
        data = {
            int(d.lun): str(d.disk_encryption_set_id)
            for d in ((enc.data_disk_images if enc else None) or [])
        }
        found[_region_key(region.name)] = {"os": os_id, "data": data}
    return found


def wanted_encryption(target_regions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Region → {os, data} from the request body's target regions."""
    found = {}
    for region in target_regions:
        enc = region.get("encryption") or {}
        os_id = (enc.get("osDiskImage") or {}).get("diskEncryptionSetId")
        data = {int(d["lun"]): d["diskEncryptionSetId"] for d in enc.get("dataDiskImages") or []}
        found[_region_key(region["name"])] = {"os": os_id, "data": data}
    return found


def _lower(encryption: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        r: {"os": (e["os"] or "").lower(), "data": {k: v.lower() for k, v in e["data"].items()}}
        for r, e in encryption.items()
    }


@task(name="Create gallery", **STEP_RETRIES)
def ensure_gallery(
    credentials: AzureCredentials, subscription_id: str | None, rg: str, name: str, location: str
) -> str:
    """Get or create the gallery; returns its id."""
    galleries = AzureClients.of(credentials, subscription_id).compute().galleries
    existing = or_none(lambda: galleries.get(rg, name))
    if existing is not None:
        return str(existing.id)
    gallery = galleries.begin_create_or_update(
        rg, name, {"location": location, "properties": {}}
    ).result()
    get_run_logger().info("Created gallery %s", name)
    return str(gallery.id)


@task(name="Create image definition", **STEP_RETRIES)
def ensure_image_definition(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    gallery: str,
    name: str,
    location: str,
    properties: dict[str, Any],
) -> str:
    """Get or create the image definition; returns its id."""
    images = AzureClients.of(credentials, subscription_id).compute().gallery_images
    existing = or_none(lambda: images.get(rg, gallery, name))
    if existing is not None:
        return str(existing.id)
    image = images.begin_create_or_update(
        rg, gallery, name, {"location": location, "properties": properties}
    ).result()
    get_run_logger().info("Created image definition %s", name)
    return str(image.id)


@task(name="Create image version", **STEP_RETRIES)
def start_image_version(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    gallery: str,
    image: str,
    version: str,
    body: dict[str, Any],
) -> str:
    """Start creating the version (replication goes on in Azure). A version that exists is
    adopted when its encryption is the requested one, in flight or done; a Failed one is
    applied again. A PUT answered `AnotherOperationInProgress` (the SDK re-sent it after its
    answer was lost, or another writer is at it) adopts the version in flight."""
    clients = AzureClients.of(credentials, subscription_id)
    versions = clients.compute().gallery_image_versions
    existing = read_version(clients, rg, gallery, image, version)
    if existing is not None and _adoptable(existing, body, version):
        return str(existing.id)
    try:
        versions.begin_create_or_update(rg, gallery, image, version, body, polling=False)
    except HttpResponseError as exc:
        if error_code(exc) != "AnotherOperationInProgress":
            raise
        in_flight = read_version(clients, rg, gallery, image, version)
        if in_flight is None or not _adoptable(in_flight, body, version):
            raise
        return str(in_flight.id)
    get_run_logger().info("Started image version %s", version)
    found = read_version(clients, rg, gallery, image, version)
    return str(found.id) if found else ""


def _adoptable(existing: Any, body: dict[str, Any], version: str) -> bool:
    """Whether an existing version is the one requested and not Failed (then adopted); one
    with another encryption is refused."""
    wanted = wanted_encryption(body["properties"]["publishingProfile"]["targetRegions"])
    if _lower(encryption_of(existing)) != _lower(wanted):
        raise InvalidRequest(
            "version",
            version,
            "this image version already exists with "
            "another encryption; publish a new version number",
        )
    state = text(existing.properties.provisioning_state)
    if state == "Failed":
        return False
    get_run_logger().info("Adopting image version %s (%s)", version, state)
    return True


@task(name="Wait for replication", **STEP_RETRIES)
def wait_for_replication(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    gallery: str,
    image: str,
    version: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> dict[str, str]:
    """Poll `$expand=ReplicationStatus` until every region is Completed, with a progress
    artifact; a region that fails fails the step, named. Returns region → state."""
    clients = AzureClients.of(credentials, subscription_id)
    version_path = f"{gallery}/{image}/{version}"
    artifact = cast(
        UUID,
        create_progress_artifact(
            0.0,
            key=artifact_key("replication", gallery, image, version),
            description=f"Replication of {image} {version}",
        ),
    )
    last = {"progress": -1.0}
    states: dict[str, str] = {}

    def state() -> str:
        found = read_version(clients, rg, gallery, image, version)
        if found is None:
            raise ResourceError(version_path, "the image version disappeared during replication")
        status = found.properties.replication_status
        summary = (status.summary if status else None) or []
        states.clear()
        states.update({str(s.region): text(s.state) for s in summary})
        failed = [f"{s.region} ({s.details})" for s in summary if text(s.state) == "Failed"]
        if failed or text(found.properties.provisioning_state) == "Failed":
            raise OperationFailed(
                version_path, f"replication failed in {', '.join(failed) or 'a region'}"
            )
        progress = sum(int(s.progress or 0) for s in summary) / max(1, len(summary))
        if progress != last["progress"]:
            update_progress_artifact(artifact, progress)
            get_run_logger().info(
                "Replication %s: %s",
                version,
                ", ".join(f"{s.region} {s.progress}%" for s in summary),
            )
            last["progress"] = progress
        done = (
            text(found.properties.provisioning_state) == "Succeeded"
            and states
            and all(v == "Completed" for v in states.values())
        )
        return "done" if done else "replicating"

    poll_until(
        state,
        frozenset({"done"}),
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Image version {version}",
    )
    update_progress_artifact(artifact, 100.0)
    return dict(states)


@task(name="Verify image version encryption", **STEP_RETRIES)
def verify_image_version(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    gallery: str,
    image: str,
    version: str,
    target_regions: list[dict[str, Any]],
) -> ImageVersionResult:
    """The published encryption matches the request, region by region, and every region's OS
    disk has a customer-key set (never reported as encrypted otherwise)."""
    clients = AzureClients.of(credentials, subscription_id)
    found = read_version(clients, rg, gallery, image, version)
    if found is None:
        raise ResourceError(f"{gallery}/{image}/{version}", "the image version is not found")
    actual, wanted = encryption_of(found), wanted_encryption(target_regions)
    if _lower(actual) != _lower(wanted):
        raise VerificationFailed(
            str(found.id), f"the version reports encryption {actual}, requested {wanted}"
        )
    plain = sorted(region for region, enc in actual.items() if not enc["os"])
    if plain:
        raise VerificationFailed(
            str(found.id), f"no customer-managed key for the OS disk in {', '.join(plain)}"
        )
    states = {
        _region_key(str(s.region)): text(s.state)
        for s in (found.properties.replication_status.summary or [])
    }
    regions = [
        RegionResult(
            name=str(r.name),
            replica_count=int(r.regional_replica_count or 1),
            os_disk_encryption_set_id=actual[_region_key(r.name)]["os"],
            data_disk_encryption_set_ids=actual[_region_key(r.name)]["data"],
            replication_state=states.get(_region_key(r.name), "Unknown"),
        )
        for r in found.properties.publishing_profile.target_regions
    ]
    return ImageVersionResult(id=str(found.id), name=str(found.name), regions=regions)
