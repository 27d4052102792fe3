"""Gallery image version requests: per-region encryption, the CLI's
`--target-region-encryption` string form, sources (no Prefect import)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator


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
        None, description="Disk encryption sets; also the CLI string '<os DES>,<lun>,<data DES>,…'."
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

    def storage_profile(self) -> dict[str, Any]:
        """The version's storageProfile."""
        if self.os_disk_snapshot_id:
            return {
                "osDiskImage": {"source": {"id": self.os_disk_snapshot_id}},
                "dataDiskImages": [
                    {"lun": lun, "source": {"id": sid}}
                    for lun, sid in sorted(self.data_disk_snapshots.items())
                ],
            }
        return {"source": {"id": self.managed_image_id or self.image_version_id}}


def des_id(reference: str, subscription_id: str, resource_group: str) -> str:
    """A disk encryption set id from an id, or a name in the image's resource group."""
    if reference.startswith("/subscriptions/"):
        return reference
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.Compute/diskEncryptionSets/{reference}"
    )


def encryption_body(
    encryption: RegionEncryption | None, subscription_id: str, resource_group: str
) -> dict[str, Any] | None:
    """The `encryption` of a target region, with set ids resolved."""
    if encryption is None:
        return None
    body: dict[str, Any] = {}
    if encryption.os_disk_encryption_set:
        body["osDiskImage"] = {
            "diskEncryptionSetId": des_id(
                encryption.os_disk_encryption_set, subscription_id, resource_group
            )
        }
    if encryption.data_disks:
        body["dataDiskImages"] = [
            {
                "lun": d.lun,
                "diskEncryptionSetId": des_id(
                    d.disk_encryption_set, subscription_id, resource_group
                ),
            }
            for d in encryption.data_disks
        ]
    return body


def future_date(value: dt.datetime | None) -> dt.datetime | None:
    """An end-of-life date must be in the future."""
    if value is not None:
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if aware <= dt.datetime.now(dt.UTC):
            raise ValueError(f"end_of_life_date {value.isoformat()} is not in the future")
    return value
