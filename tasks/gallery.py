"""Gallery steps: validation of the source, gallery and image definition (get or create), the
image version (create or adopt), replication with per-region progress, verification."""

from __future__ import annotations

from typing import cast
from uuid import UUID

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute.models import Gallery, GalleryImageVersion, GalleryProperties
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id, resource_id
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from blocks.azure import AzureCredentials
from byok.azure_errors import error_code, or_none
from byok.errors import OperationFailed, ResourceError, VerificationFailed
from byok.gallery import (
    ImageDefinition,
    ImageSource,
    ImageVersionRequest,
    ImageVersionResult,
    RegionEncryption,
    encryption_of,
    format_target_region_encryption,
    image_version_result,
    same_encryption,
)
from byok.gallery import RegionResult as RegionResult  # results persisted before name it here
from byok.polling import poll_until
from byok.sdk_values import text
from byok.validation import InvalidRequest, check_name
from clients.azure import AzureClients
from tasks.artifacts import artifact_key
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


def read_version(
    clients: AzureClients, rg: str, gallery: str, image: str, version: str
) -> GalleryImageVersion | None:
    """The version with its replication status, or None."""
    return or_none(
        lambda: clients.compute().gallery_image_versions.get(
            rg, gallery, image, version, expand="ReplicationStatus"
        )
    )


@task(name="Create gallery", **STEP_RETRIES)
def ensure_gallery(
    credentials: AzureCredentials, subscription_id: str | None, rg: str, name: str, location: str
) -> str:
    """Get or create the gallery; returns its id."""
    galleries = AzureClients.of(credentials, subscription_id).compute().galleries
    existing = or_none(lambda: galleries.get(rg, name))
    if existing is not None:
        report(str(existing.id), None)
        return str(existing.id)
    gallery = galleries.begin_create_or_update(
        rg, name, Gallery(location=location, properties=GalleryProperties())
    ).result()
    report(str(gallery.id), "create")
    return str(gallery.id)


@task(name="Create image definition", **STEP_RETRIES)
def ensure_image_definition(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    gallery: str,
    name: str,
    location: str,
    definition: ImageDefinition,
) -> str:
    """Get or create the image definition; returns its id."""
    images = AzureClients.of(credentials, subscription_id).compute().gallery_images
    existing = or_none(lambda: images.get(rg, gallery, name))
    if existing is not None:
        report(str(existing.id), None)
        return str(existing.id)
    image = images.begin_create_or_update(rg, gallery, name, definition.to_sdk(location)).result()
    report(str(image.id), "create")
    return str(image.id)


@task(name="Create image version", **STEP_RETRIES)
def start_image_version(
    credentials: AzureCredentials, subscription_id: str, request: ImageVersionRequest
) -> str:
    """Start creating the version (replication goes on in Azure). A version that exists is
    adopted when its encryption is the requested one, in flight or done; a Failed one is
    applied again. A PUT answered `AnotherOperationInProgress` (the SDK re-sent it after its
    answer was lost, or another writer is at it) adopts the version in flight."""
    clients = AzureClients.of(credentials, subscription_id)
    versions = clients.compute().gallery_image_versions
    rg, gallery, image, version = (
        request.resource_group,
        request.gallery_name,
        request.image_name,
        request.version,
    )
    wanted = request.encryption_by_region(subscription_id)
    existing = read_version(clients, rg, gallery, image, version)
    verb = _version_verb(existing, wanted, version)
    if existing is not None and verb != "update":
        report(str(existing.id), verb, note=text(existing.properties.provisioning_state))
        return str(existing.id)
    body = request.to_sdk(subscription_id)
    try:
        versions.begin_create_or_update(rg, gallery, image, version, body, polling=False)
    except HttpResponseError as exc:
        if error_code(exc) != "AnotherOperationInProgress":
            raise
        in_flight = read_version(clients, rg, gallery, image, version)
        if in_flight is None or _version_verb(in_flight, wanted, version) == "update":
            raise
        report(str(in_flight.id), "adopt", note="in flight")
        return str(in_flight.id)
    found = read_version(clients, rg, gallery, image, version)
    target = str(found.id) if found else request.version_id(subscription_id)
    report(target, verb, note="re-submitted: it was Failed" if verb == "update" else "")
    return str(found.id) if found else ""


def _version_verb(
    existing: GalleryImageVersion | None, wanted: dict[str, RegionEncryption], version: str
) -> str | None:
    """What the version step does to `existing`: create (none), update (a Failed one,
    re-submitted), adopt (in flight) or None (published); one with another encryption is
    refused."""
    if existing is None:
        return "create"
    if not same_encryption(encryption_of(existing), wanted):
        raise InvalidRequest(
            "version",
            version,
            "this image version already exists with "
            "another encryption; publish a new version number",
        )
    state = text(existing.properties.provisioning_state)
    return {"Failed": "update", "Succeeded": None}.get(state, "adopt")


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
    last = {"progress": -1.0, "polls": 0}
    states: dict[str, str] = {}
    seen: list[str] = []

    def state() -> str:
        found = read_version(clients, rg, gallery, image, version)
        if found is None:
            raise ResourceError(version_path, "the image version disappeared during replication")
        seen[:] = [str(found.id)]
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
        last["polls"] += 1
        return "done" if done else "replicating"

    poll_until(
        state,
        frozenset({"done"}),
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Image version {version}",
    )
    update_progress_artifact(artifact, 100.0)
    waited = last["polls"] > 1
    report(
        seen[0],
        "wait for" if waited else None,
        note=", ".join(f"{region} {state}" for region, state in states.items()),
    )
    return dict(states)


@task(name="Verify image version encryption", **STEP_RETRIES)
def verify_image_version(
    credentials: AzureCredentials, subscription_id: str, request: ImageVersionRequest
) -> ImageVersionResult:
    """The published encryption matches the request, region by region, and every region's OS
    disk has a customer-key set (never reported as encrypted otherwise)."""
    clients = AzureClients.of(credentials, subscription_id)
    rg, gallery, image, version = (
        request.resource_group,
        request.gallery_name,
        request.image_name,
        request.version,
    )
    found = read_version(clients, rg, gallery, image, version)
    if found is None:
        raise ResourceError(f"{gallery}/{image}/{version}", "the image version is not found")
    actual, wanted = encryption_of(found), request.encryption_by_region(subscription_id)
    if not same_encryption(actual, wanted):
        raise VerificationFailed(
            str(found.id),
            f"the version reports encryption {_shown(actual)}, requested {_shown(wanted)}",
        )
    plain = sorted(region for region, enc in actual.items() if not enc.os_disk_encryption_set)
    if plain:
        raise VerificationFailed(
            str(found.id), f"no customer-managed key for the OS disk in {', '.join(plain)}"
        )
    report(str(found.id), "verify", note=f"customer keys in {', '.join(sorted(actual))}")
    return image_version_result(found)


@task(name="Plan the image version", **STEP_RETRIES)
def plan_image_version(
    credentials: AzureCredentials, subscription_id: str, request: ImageVersionRequest
) -> None:
    """What each step of publish-encrypted-image-version after the feature would do, from
    reads only (a version that exists with another encryption is refused, as the run
    would)."""
    clients = AzureClients.of(credentials, subscription_id)
    compute = clients.compute()
    rg, gallery, image = request.resource_group, request.gallery_name, request.image_name
    if request.create_gallery:
        group_id = resource_id(subscription=subscription_id, resource_group=rg)
        gallery_id = f"{group_id}/providers/Microsoft.Compute/galleries/{gallery}"
        made = or_none(lambda: compute.galleries.get(rg, gallery)) is not None
        report(gallery_id, None if made else "create", step="Create gallery", planned=True)
        made = made and or_none(lambda: compute.gallery_images.get(rg, gallery, image)) is not None
        report(
            f"{gallery_id}/images/{image}",
            None if made else "create",
            step="Create image definition",
            planned=True,
        )
    existing = read_version(clients, rg, gallery, image, request.version)
    verb = _version_verb(existing, request.encryption_by_region(subscription_id), request.version)
    target = request.version_id(subscription_id)
    report(target, verb, step="Create image version", planned=True)
    replicated = existing is not None and verb is None
    report(
        target,
        None if replicated else "wait for",
        step="Wait for replication",
        planned=True,
    )
    report(target, "verify", step="Verify image version encryption", planned=True)


def _shown(encryption: dict[str, RegionEncryption]) -> dict[str, str]:
    return {r: format_target_region_encryption(e) for r, e in encryption.items()}


@task(name="Validate request", **STEP_RETRIES)
def validate_image_request(
    credentials: AzureCredentials, request: ImageVersionRequest, subscription: str
) -> None:
    """Before any write: the resource group's name; the source (exists, not a customer-key
    version) and its LUNs: each has a set, in every region. (The sets themselves:
    `check_disk_encryption_sets`.)"""
    check_name("resource_group", "resource_group", request.resource_group)
    luns = source_luns(AzureClients.of(credentials, subscription), request.source)
    for i, region in enumerate(request.target_regions):
        given = set((region.encryption or RegionEncryption()).data_sets())
        if given != luns:
            raise InvalidRequest(
                f"target_regions[{i}].encryption.data_disks",
                sorted(given),
                f"one disk encryption set per data disk: the source's data disks have LUNs "
                f"{sorted(luns)}",
            )


def source_luns(clients: AzureClients, source: ImageSource) -> set[int]:
    """The source's data-disk LUNs; InvalidRequest when it is missing or not usable."""
    compute = clients.compute()
    try:
        if source.managed_image_id:
            p = _where(source.managed_image_id)
            image = compute.images.get(p["resource_group"], p["name"])
            return {int(d.lun) for d in image.properties.storage_profile.data_disks or []}
        if source.image_version_id:
            p = _where(source.image_version_id)
            version = compute.gallery_image_versions.get(
                p["resource_group"], p["name"], p["child_name_1"], p["child_name_2"]
            )
            if any(
                r.encryption for r in version.properties.publishing_profile.target_regions or []
            ):
                raise InvalidRequest(
                    "source.image_version_id",
                    source.image_version_id,
                    "an image version encrypted with customer-managed keys "
                    "cannot be copied or used as a source",
                )
            return {int(d.lun) for d in version.properties.storage_profile.data_disk_images or []}
        for sid in [source.os_disk_snapshot_id, *source.data_disk_snapshots.values()]:
            p = _where(str(sid))
            compute.snapshots.get(p["resource_group"], p["name"])
        return set(source.data_disk_snapshots)
    except (ResourceNotFoundError, KeyError):
        raise InvalidRequest(
            "source", source.model_dump(exclude_defaults=True), "the source does not exist"
        ) from None


def _where(rid: str) -> dict[str, str]:
    """The parts of a resource id (KeyError for a part an invalid id lacks)."""
    return (
        {k: str(v) for k, v in parse_resource_id(rid).items()} if is_valid_resource_id(rid) else {}
    )
