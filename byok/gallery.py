# mypy: disable-error-code="union-attr"
# (the SDK types every field Optional; a version Azure returns has them: see pyproject.toml)
"""Gallery image version requests and results (no Prefect import): per-region encryption as
a typed model (the CLI's `--target-region-encryption` string form accepted at the edge),
sources, the request bodies as azure-mgmt-compute models, and the encryption a version
reports."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from azure.mgmt.compute import models as compute
from azure.mgmt.core.tools import resource_id
from pydantic import BaseModel, Field, field_validator, model_validator

from byok.errors import InvalidRequest
from byok.outcomes import PLAN_ONLY
from byok.parameters import AZURE_BLOCK_NAME
from byok.sdk_values import text
from byok.validation import GalleryImageName, GalleryName, ImageVersionName, region_key

SIG_ENCRYPTION = ("Microsoft.Compute", "SIGEncryption")
"""The preview feature of encrypted image versions (unknown to a subscription once GA)."""
SIG_ENCRYPTION_TIMEOUT = 60 * 60  # seconds to wait for it to be Registered (users see 30+ min)


class DataDiskEncryption(BaseModel):
    """One data disk's disk encryption set."""

    lun: int = Field(..., ge=0, le=63, description="LUN of the source's data disk.")
    disk_encryption_set: str = Field(..., description="Disk encryption set name or id.")


class RegionEncryption(BaseModel):
    """A region's encryption: the OS disk's set and each data disk's set."""

    os_disk_encryption_set: str | None = Field(
        None, description="Disk encryption set of the OS disk (name or id)."
    )
    data_disks: list[DataDiskEncryption] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_entry_per_lun(self) -> RegionEncryption:
        luns = [d.lun for d in self.data_disks]
        if len(set(luns)) != len(luns):
            raise ValueError(f"data disk LUNs {luns} list a LUN twice")
        return self

    def with_ids(self, subscription_id: str, resource_group: str) -> RegionEncryption:
        """The same encryption with every set named by its resource id."""
        os_set, sub, group = self.os_disk_encryption_set, subscription_id, resource_group
        return RegionEncryption(
            os_disk_encryption_set=os_set and des_id(os_set, sub, group),
            data_disks=[
                DataDiskEncryption(
                    lun=d.lun,
                    disk_encryption_set=des_id(
                        d.disk_encryption_set, subscription_id, resource_group
                    ),
                )
                for d in self.data_disks
            ],
        )

    def data_sets(self) -> dict[int, str]:
        """LUN → set."""
        return {d.lun: d.disk_encryption_set for d in self.data_disks}

    def same_as(self, other: RegionEncryption | None) -> bool:
        """The same sets (ids compared case-insensitively, data disks by LUN)."""

        def shape(e: RegionEncryption | None) -> tuple[str, dict[int, str]]:
            if e is None:
                return "", {}
            return (e.os_disk_encryption_set or "").lower(), {
                k: v.lower() for k, v in e.data_sets().items()
            }

        return shape(self) == shape(other)

    def to_sdk(self) -> compute.EncryptionImages:
        """The target region's `encryption` (set ids resolved first: `with_ids`)."""
        os_set = self.os_disk_encryption_set
        return compute.EncryptionImages(
            os_disk_image=compute.OSDiskImageEncryption(disk_encryption_set_id=os_set)
            if os_set
            else None,
            data_disk_images=[
                compute.DataDiskImageEncryption(
                    lun=d.lun, disk_encryption_set_id=d.disk_encryption_set
                )
                for d in self.data_disks
            ]
            or None,
        )

    @classmethod
    def from_sdk(cls, encryption: compute.EncryptionImages | None) -> RegionEncryption:
        """The encryption a version reports for a region."""
        os_image = encryption.os_disk_image if encryption else None
        data = (encryption.data_disk_images if encryption else None) or []
        return cls(
            os_disk_encryption_set=os_image.disk_encryption_set_id if os_image else None,
            data_disks=[
                DataDiskEncryption(
                    lun=int(d.lun), disk_encryption_set=str(d.disk_encryption_set_id)
                )
                for d in data
            ],
        )


def parse_target_region_encryption(text: str) -> RegionEncryption:
    """Parse the CLI form `<os DES>,<lun>,<data DES>,<lun>,<data DES>…` (the OS part may be
    empty: `,0,des2`)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) % 2 == 0:
        raise ValueError(
            f"'{text}' is not <os DES>[,<lun>,<data DES>]…: the LUNs and data "
            "disk encryption sets must come in pairs"
        )
    data = []
    for lun, des in zip(parts[1::2], parts[2::2], strict=True):
        if not lun.isdigit() or not des:
            raise ValueError(f"'{text}': '{lun},{des}' is not a <lun>,<data DES> pair")
        data.append(DataDiskEncryption(lun=int(lun), disk_encryption_set=des))
    return RegionEncryption(os_disk_encryption_set=parts[0] or None, data_disks=data)


def format_target_region_encryption(encryption: RegionEncryption) -> str:
    """The CLI string form of a region's encryption."""
    pairs = [f"{d.lun},{d.disk_encryption_set}" for d in encryption.data_disks]
    return ",".join([encryption.os_disk_encryption_set or "", *pairs])


class TargetRegion(BaseModel):
    """A region the version replicates to."""

    name: str = Field(..., min_length=1, description="Azure region, e.g. westeurope.")
    replica_count: int = Field(1, ge=1, le=100, description="Replicas in this region.")
    storage_account_type: Literal[
        "Standard_LRS", "Standard_ZRS", "Premium_LRS", "PremiumV2_LRS"
    ] = Field("Standard_LRS", description="Storage of the replicas (azure-mgmt-compute's enum).")
    encryption: RegionEncryption | None = Field(
        None, description="Disk encryption sets; also the CLI string `<os DES>,<lun>,<data DES>,…`."
    )

    @field_validator("encryption", mode="before")
    @classmethod
    def _cli_form(cls, value: Any) -> Any:
        return parse_target_region_encryption(value) if isinstance(value, str) else value


class ImageSource(BaseModel):
    """Exactly one of: a managed image, an OS-disk snapshot (+ data-disk snapshots), or an
    image version."""

    managed_image_id: str | None = None
    os_disk_snapshot_id: str | None = None
    data_disk_snapshots: dict[int, str] = Field(
        default_factory=dict, description="LUN → snapshot id."
    )
    image_version_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageSource:
        given = [
            n
            for n in ("managed_image_id", "os_disk_snapshot_id", "image_version_id")
            if getattr(self, n)
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one source: managed_image_id, os_disk_snapshot_id "
                f"(with data_disk_snapshots) or image_version_id; got {given or 'none'}"
            )
        if self.data_disk_snapshots and not self.os_disk_snapshot_id:
            raise ValueError("data_disk_snapshots go with os_disk_snapshot_id")
        return self

    def storage_profile(self) -> compute.GalleryImageVersionStorageProfile:
        """The version's storageProfile."""
        if self.os_disk_snapshot_id:
            return compute.GalleryImageVersionStorageProfile(
                os_disk_image=compute.GalleryOSDiskImage(
                    source=compute.GalleryDiskImageSource(id=self.os_disk_snapshot_id)
                ),
                data_disk_images=[
                    compute.GalleryDataDiskImage(
                        lun=lun, source=compute.GalleryDiskImageSource(id=sid)
                    )
                    for lun, sid in sorted(self.data_disk_snapshots.items())
                ],
            )
        return compute.GalleryImageVersionStorageProfile(
            source=compute.GalleryArtifactVersionFullSource(
                id=self.managed_image_id or self.image_version_id
            )
        )


def des_id(reference: str, subscription_id: str, resource_group: str) -> str:
    """A disk encryption set id from an id, or a name in the image's resource group."""
    if reference.startswith("/subscriptions/"):
        return reference
    return resource_id(
        subscription=subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.Compute",
        type="diskEncryptionSets",
        name=reference,
    )


def future_date(value: dt.datetime | None) -> dt.datetime | None:
    """An end-of-life date must be in the future."""
    if value is not None:
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if aware <= dt.datetime.now(dt.UTC):
            raise ValueError(f"end_of_life_date {value.isoformat()} is not in the future")
    return value


class ImageDefinition(BaseModel):
    """The image definition, used when it has to be created."""

    os_type: Literal["Linux", "Windows"] = "Linux"
    os_state: Literal["Generalized", "Specialized"] = "Generalized"
    hyper_v_generation: Literal["V1", "V2"] = "V2"
    publisher: str = "byok"
    offer: str = "encrypted"
    sku: str = "base"

    def to_sdk(self, location: str) -> compute.GalleryImage:
        """The image definition's body."""
        return compute.GalleryImage(
            location=location,
            properties=compute.GalleryImageProperties(
                os_type=self.os_type,
                os_state=self.os_state,
                hyper_v_generation=self.hyper_v_generation,
                identifier=compute.GalleryImageIdentifier(
                    publisher=self.publisher, offer=self.offer, sku=self.sku
                ),
            ),
        )


class ImageVersionRequest(BaseModel):
    """An image version and where, with which keys, it is published."""

    azure_credentials_block: str | None = Field(None, description=AZURE_BLOCK_NAME)
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
    plan_only: bool = PLAN_ONLY

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

    def encryption_by_region(self, subscription: str) -> dict[str, RegionEncryption]:
        """Region (as a key) → its encryption, every set named by its id."""
        return {
            region_key(r.name): r.encryption.with_ids(subscription, self.resource_group)
            for r in self.target_regions
            if r.encryption is not None
        }

    def set_references(self, subscription: str) -> dict[str, tuple[str, str]]:
        """Each set the regions name: request field → (set id, its target region)."""
        found: dict[str, tuple[str, str]] = {}
        for i, region in enumerate(self.target_regions):
            field = f"target_regions[{i}].encryption"
            encryption = region.encryption or RegionEncryption()
            refs = {f"{field}.os_disk_encryption_set": encryption.os_disk_encryption_set or ""}
            refs |= {f"{field}.data_disks[lun {n}]": r for n, r in encryption.data_sets().items()}
            found |= {
                f: (des_id(ref, subscription, self.resource_group), region.name)
                for f, ref in refs.items()
                if ref
            }
        return found

    def to_sdk(self, subscription: str) -> compute.GalleryImageVersion:
        """The image version of `az sig image-version create --target-region-encryption`."""
        wanted = self.encryption_by_region(subscription)
        regions = [
            compute.TargetRegion(
                name=r.name,
                regional_replica_count=r.replica_count,
                storage_account_type=r.storage_account_type,
                encryption=wanted[region_key(r.name)].to_sdk()
                if region_key(r.name) in wanted
                else None,
            )
            for r in self.target_regions
        ]
        return compute.GalleryImageVersion(
            location=self.location,
            properties=compute.GalleryImageVersionProperties(
                publishing_profile=compute.GalleryImageVersionPublishingProfile(
                    target_regions=regions, end_of_life_date=self.end_of_life_date
                ),
                storage_profile=self.source.storage_profile(),
            ),
        )


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

    def encryption_sets(self) -> list[str]:
        """Every set the version's regions use, sorted."""
        return sorted(
            {
                s
                for r in self.regions
                for s in [r.os_disk_encryption_set_id, *r.data_disk_encryption_set_ids.values()]
                if s
            }
        )


def encryption_of(version: compute.GalleryImageVersion) -> dict[str, RegionEncryption]:
    """Region (as a key) → the encryption the version reports for it."""
    return {
        region_key(str(r.name)): RegionEncryption.from_sdk(r.encryption)
        for r in version.properties.publishing_profile.target_regions or []
    }


def same_encryption(
    actual: dict[str, RegionEncryption], wanted: dict[str, RegionEncryption]
) -> bool:
    """The same regions, each with the same sets."""
    return actual.keys() == wanted.keys() and all(actual[r].same_as(wanted[r]) for r in actual)


def image_version_result(version: compute.GalleryImageVersion) -> ImageVersionResult:
    """The published version, region by region, with its replication state."""
    actual = encryption_of(version)
    status = version.properties.replication_status
    states = {
        region_key(str(s.region)): text(s.state)
        for s in ((status.summary if status else None) or [])
    }
    return ImageVersionResult(
        id=str(version.id),
        name=str(version.name),
        regions=[
            RegionResult(
                name=str(r.name),
                replica_count=int(r.regional_replica_count or 1),
                os_disk_encryption_set_id=actual[region_key(str(r.name))].os_disk_encryption_set,
                data_disk_encryption_set_ids=actual[region_key(str(r.name))].data_sets(),
                replication_state=states.get(region_key(str(r.name)), "Unknown"),
            )
            for r in version.properties.publishing_profile.target_regions or []
        ],
    )
