"""Procedure A: an Azure Compute Gallery image version encrypted with customer-managed keys
in every target region."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.core.tools import resource_id
from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field, field_validator, model_validator

from blocks.azure import AzureCredentials
from byok.gallery import (
    ImageSource,
    TargetRegion,
    des_id,
    encryption_body,
    format_target_region_encryption,
    future_date,
)
from byok.keyvault_ids import KeyId
from byok.parameters import parse_request
from byok.validation import (
    GalleryImageName,
    GalleryName,
    ImageVersionName,
    InvalidRequest,
    check_name,
    region_key,
)
from clients.azure import AzureClients
from flows.registration import FeatureRegistrationRequest, ensure_feature_registration
from tasks.events import emit_byok_event
from tasks.gallery import (
    ImageVersionResult,
    ensure_gallery,
    ensure_image_definition,
    start_image_version,
    verify_image_version,
    wait_for_replication,
)
from tasks.refusal import refuse_quietly
from tasks.resource_group import ensure_resource_group
from tasks.retry import STEP_RETRIES
from tasks.run_lock import resource_lock
from tasks.subscription import check_subscription_regions


class ImageDefinition(BaseModel):
    """The image definition, used when it has to be created."""

    os_type: Literal["Linux", "Windows"] = "Linux"
    os_state: Literal["Generalized", "Specialized"] = "Generalized"
    hyper_v_generation: Literal["V1", "V2"] = "V2"
    publisher: str = "byok"
    offer: str = "encrypted"
    sku: str = "base"


class ImageVersionRequest(BaseModel):
    """An image version and where, with which keys, it is published."""

    azure_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK Azure Credentials' block."
    )
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the gallery.")
    location: str = Field(..., description="Region of the gallery and the image definition.")
    gallery_name: GalleryName = Field(..., description="Gallery (letters, digits, '.' and '_').")
    image_name: GalleryImageName = Field(
        ..., description="Image definition (letters, digits, '_-.')."
    )
    version: ImageVersionName = Field(..., description="major.minor.patch, e.g. 1.0.0")
    create_gallery: bool = Field(
        True, description="Create the gallery and the image definition when missing."
    )
    definition: ImageDefinition = Field(default_factory=ImageDefinition)
    source: ImageSource = Field(..., description="Managed image, snapshots, or image version.")
    target_regions: list[TargetRegion] = Field(
        ..., min_length=1, description="One entry (with its encryption) per region."
    )
    end_of_life_date: dt.datetime | None = Field(None, description="Optional, in the future.")
    ensure_feature: bool = Field(
        True,
        description="Register Microsoft.Compute/SIGEncryption "
        "first (skipped when the feature is unknown: GA).",
    )
    replication_timeout_minutes: float = Field(
        180, gt=0, description="Replication takes 30-60 minutes per version, sometimes hours."
    )
    poll_seconds: float = Field(30, gt=0, description="Seconds between replication checks.")
    wait_for_other_run: bool = Field(
        False,
        description="When another run is publishing this version: wait for it "
        "(default: fail at once).",
    )

    @field_validator("end_of_life_date")
    @classmethod
    def _future(cls, value: dt.datetime | None) -> dt.datetime | None:
        return future_date(value)

    @model_validator(mode="after")
    def _regions(self) -> ImageVersionRequest:
        names = [region_key(r.name) for r in self.target_regions]
        if len(set(names)) != len(names):
            raise InvalidRequest("target_regions", names, "one entry per region")
        for i, region in enumerate(self.target_regions):  # fail closed: customer keys only
            if region.encryption is None or not region.encryption.os_disk_encryption_set:
                raise InvalidRequest(
                    f"target_regions[{i}].encryption",
                    region.encryption and format_target_region_encryption(region.encryption),
                    "every target region needs a disk encryption set (customer-managed key) "
                    "for the OS disk: os_disk_encryption_set, or '<os DES>,<lun>,<data DES>,…'",
                )
        return self

    def version_id(self, subscription: str) -> str:
        """The image version's resource id."""
        return resource_id(
            subscription=subscription,
            resource_group=self.resource_group,
            namespace="Microsoft.Compute",
            type="galleries",
            name=self.gallery_name,
            child_type_1="images",
            child_name_1=self.image_name,
            child_type_2="versions",
            child_name_2=self.version,
        )


def _parts(resource_id: str) -> list[str]:
    return resource_id.strip("/").split("/")


def source_luns(clients: AzureClients, source: ImageSource) -> set[int]:
    """The source's data-disk LUNs; InvalidRequest when it is missing or not usable."""
    compute = clients.compute()
    try:
        if source.managed_image_id:
            p = _parts(source.managed_image_id)
            image = compute.images.get(p[3], p[7])
            return {int(d.lun) for d in image.properties.storage_profile.data_disks or []}
        if source.image_version_id:
            p = _parts(source.image_version_id)
            version = compute.gallery_image_versions.get(p[3], p[7], p[9], p[11])
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
            p = _parts(str(sid))
            compute.snapshots.get(p[3], p[7])
        return set(source.data_disk_snapshots)
    except (ResourceNotFoundError, IndexError):
        raise InvalidRequest(
            "source", source.model_dump(exclude_defaults=True), "the source does not exist"
        ) from None


def check_des(
    clients: AzureClients, field: str, set_id: str, subscription: str, region: str
) -> None:
    """The set is in the image's subscription and the region, and its key exists."""
    p = _parts(set_id)
    if len(p) != 8 or p[7] == "":
        raise InvalidRequest(field, set_id, "not a disk encryption set id")
    if p[1].lower() != subscription.lower():
        raise InvalidRequest(
            field,
            set_id,
            f"the disk encryption set must be in the image's subscription {subscription}",
        )
    try:
        des = clients.compute().disk_encryption_sets.get(p[3], p[7])
    except ResourceNotFoundError:
        raise InvalidRequest(field, set_id, "no such disk encryption set") from None
    if region_key(str(des.location)) != region_key(region):
        raise InvalidRequest(
            field, set_id, f"the disk encryption set is in {des.location}, not in {region}"
        )
    key = KeyId.parse(str(des.properties.active_key.key_url))
    try:
        clients.keys(key.vault_url).get_key(key.name, key.version)
    except ResourceNotFoundError:
        raise InvalidRequest(
            field, set_id, f"its key {key.versioned} is not in the vault"
        ) from None
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        get_run_logger().info("No read access to %s: its key is checked by Azure", key.name)


@task(name="Validate request", **STEP_RETRIES)
def validate_image_request(
    credentials: AzureCredentials, request: ImageVersionRequest, subscription: str
) -> None:
    """Before any write: names; each region's sets (subscription, region, key); the source
    (exists, not a customer-key version) and its LUNs: each has a set, in every region."""
    check_name("resource_group", "resource_group", request.resource_group)
    clients = AzureClients.of(credentials, subscription)
    luns = source_luns(clients, request.source)
    for i, region in enumerate(request.target_regions):
        if region.encryption is None:
            continue
        field = f"target_regions[{i}].encryption"
        refs = [(f"{field}.os_disk_encryption_set", region.encryption.os_disk_encryption_set)]
        refs += [
            (f"{field}.data_disks[lun {d.lun}]", d.disk_encryption_set)
            for d in region.encryption.data_disks
        ]
        for ref_field, ref in refs:
            if ref:
                check_des(
                    clients,
                    ref_field,
                    des_id(ref, subscription, request.resource_group),
                    subscription,
                    region.name,
                )
        given = {d.lun for d in region.encryption.data_disks}
        if given != luns:
            raise InvalidRequest(
                f"{field}.data_disks",
                sorted(given),
                f"one disk encryption set per data disk: the source's data disks have LUNs "
                f"{sorted(luns)}",
            )


def version_body(request: ImageVersionRequest, subscription: str) -> dict[str, Any]:
    """The image version of `az sig image-version create --target-region-encryption`."""
    regions = []
    for region in request.target_regions:
        entry: dict[str, Any] = {
            "name": region.name,
            "regionalReplicaCount": region.replica_count,
            "storageAccountType": region.storage_account_type,
        }
        encryption = encryption_body(region.encryption, subscription, request.resource_group)
        if encryption:
            entry["encryption"] = encryption
        regions.append(entry)
    profile: dict[str, Any] = {"targetRegions": regions}
    if request.end_of_life_date:
        profile["endOfLifeDate"] = request.end_of_life_date.isoformat()
    return {
        "location": request.location,
        "properties": {
            "publishingProfile": profile,
            "storageProfile": request.source.storage_profile(),
        },
    }


@flow(name="publish-encrypted-image-version", persist_result=True, validate_parameters=False)
@refuse_quietly
def publish_encrypted_image_version(request: ImageVersionRequest) -> ImageVersionResult:
    """Validate (request, subscription, regions, sets, source) → one run per version →
    SIGEncryption feature and provider → gallery and image definition → image version with
    per-region encryption → wait for replication (progress artifact) → verify."""
    request = parse_request(ImageVersionRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub = request.subscription_id or credentials.subscription_id
    check_subscription_regions(
        credentials,
        sub,
        {
            "location": request.location,
            **{f"target_regions[{i}].name": r.name for i, r in enumerate(request.target_regions)},
        },
    )
    validate_image_request(credentials, request, sub)
    with resource_lock(request.version_id(sub), wait=request.wait_for_other_run):
        return _publish(credentials, request, sub)


def _publish(
    credentials: AzureCredentials, request: ImageVersionRequest, sub: str
) -> ImageVersionResult:
    """The writes of the flow, once the request is valid and the version's lock held."""
    rg, gallery, image = request.resource_group, request.gallery_name, request.image_name
    if request.ensure_feature:
        ensure_feature_registration(
            FeatureRegistrationRequest(
                azure_credentials_block=request.azure_credentials_block,
                subscription_id=sub,
                namespace="Microsoft.Compute",
                feature="SIGEncryption",
                optional=True,
                poll_seconds=request.poll_seconds,
            )
        )
    if request.create_gallery:
        ensure_resource_group(credentials, sub, rg, request.location)
        ensure_gallery(credentials, sub, rg, gallery, request.location)
        d = request.definition
        ensure_image_definition(
            credentials,
            sub,
            rg,
            gallery,
            image,
            request.location,
            {
                "osType": d.os_type,
                "osState": d.os_state,
                "hyperVGeneration": d.hyper_v_generation,
                "identifier": {"publisher": d.publisher, "offer": d.offer, "sku": d.sku},
            },
        )
    body = version_body(request, sub)
    start_image_version(credentials, sub, rg, gallery, image, request.version, body)
    wait_for_replication(
        credentials,
        sub,
        rg,
        gallery,
        image,
        request.version,
        request.replication_timeout_minutes * 60,
        request.poll_seconds,
    )
    result = verify_image_version(
        credentials,
        sub,
        rg,
        gallery,
        image,
        request.version,
        body["properties"]["publishingProfile"]["targetRegions"],
    )
    sets = sorted(
        {
            s
            for r in result.regions
            for s in [r.os_disk_encryption_set_id, *r.data_disk_encryption_set_ids.values()]
            if s
        }
    )
    emit_byok_event(
        "resource.encrypted",
        result.id,
        "gallery-image-version",
        related={f"disk-encryption-set-{i}": s for i, s in enumerate(sets)},
    )
    return result
