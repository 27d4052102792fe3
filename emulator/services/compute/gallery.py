"""Compute galleries, image definitions and image versions encrypted per region with disk
encryption sets, plus the sources a version is made from (managed images, snapshots).

Image versions replicate region by region over time (`replication_seconds` per version, the
LRO ends when every region is done; `$expand=ReplicationStatus` shows the progress); a region
in `failing_regions` ends Failed and fails the operation naming it."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from emulator.http import HttpError
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.compute.models import DISK_ENCRYPTION_SET_TYPE, DiskEncryptionSetHooks

GALLERY_TYPE = "Microsoft.Compute/galleries"
IMAGE_TYPE = "Microsoft.Compute/galleries/images"
VERSION_TYPE = "Microsoft.Compute/galleries/images/versions"
MANAGED_IMAGE_TYPE = "Microsoft.Compute/images"
SNAPSHOT_TYPE = "Microsoft.Compute/snapshots"


def _norm(region: str) -> str:
    return (region or "").lower().replace(" ", "")


def version_encryptions(props: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Target region (normalised) → its encryption entry ({} when none)."""
    regions = (props.get("publishingProfile") or {}).get("targetRegions") or []
    return {_norm(r.get("name", "")): r.get("encryption") or {} for r in regions}


def is_customer_key_encrypted(version: dict[str, Any]) -> bool:
    """Whether any region of a version uses a disk encryption set."""
    return any(version_encryptions(version.get("properties") or {}).values())


class ImageVersionHooks(TypeHooks):
    """The rules of customer-key-encrypted image versions."""

    replication_seconds = 0.3

    def __init__(self, des_hooks: DiskEncryptionSetHooks) -> None:
        self.des_hooks = des_hooks
        self.failing_regions: set[str] = set()

    def validate(self, ctx: PutContext) -> None:
        props = ctx.body.get("properties") or {}
        old = (ctx.existing or {}).get("properties") or {}
        profile = props.get("publishingProfile") or old.get("publishingProfile") or {}
        regions = profile.get("targetRegions") or [{"name": ctx.body.get("location", "")}]
        names = [_norm(r.get("name", "")) for r in regions]
        if len(set(names)) != len(names):
            raise HttpError(
                400,
                "InvalidParameter",
                "publishingProfile.targetRegions lists a "
                "region twice: one entry (and one encryption) per region.",
            )
        encrypted = [bool(r.get("encryption")) for r in regions]
        if any(encrypted) and not all(encrypted):
            plain = [r["name"] for r, e in zip(regions, encrypted, strict=True) if not e]
            raise HttpError(
                400,
                "InvalidParameter",
                "Every target region needs an encryption "
                f"entry when one has it; missing for {', '.join(plain)}.",
            )
        if ctx.existing and is_customer_key_encrypted(ctx.existing) and not any(encrypted):
            raise HttpError(
                400,
                "InvalidParameter",
                "An image version encrypted with "
                "customer-managed keys cannot go back to platform-managed keys.",
            )
        eol = profile.get("endOfLifeDate")
        if eol and dt.datetime.fromisoformat(eol.replace("Z", "+00:00")) <= dt.datetime.now(dt.UTC):
            raise HttpError(
                400,
                "InvalidParameter",
                f"publishingProfile.endOfLifeDate '{eol}' must be in the future.",
            )
        source_luns = self.source_luns(
            ctx.arm, props.get("storageProfile") or old.get("storageProfile") or {}
        )
        for region in regions:
            self.check_region_encryption(ctx, region, source_luns)

    @staticmethod
    def generation_conflict(arm: ArmModel, version_id: str, storage: dict[str, Any]) -> str | None:
        """Why a version's source cannot go into its image definition: a managed image of
        another Hyper-V generation than the definition's (default V1) ends the operation
        Failed with code Conflict (https://github.com/MicrosoftDocs/azure-docs/issues/118774,
        https://github.com/confidential-containers/cloud-api-adaptor/issues/928). A managed
        image that does not state its generation is not checked: Azure deduces it from the
        source disks, which the emulator does not have."""
        source = arm.get((storage.get("source") or {}).get("id") or "")
        if source is None or source["type"] != MANAGED_IMAGE_TYPE:
            return None
        given = source["properties"].get("hyperVGeneration")
        definition = arm.get(ids.parse(version_id).parent) or {}
        wanted = (definition.get("properties") or {}).get("hyperVGeneration") or "V1"
        if not given or given.upper() == wanted.upper():
            return None
        return (
            f"The resource with id '{source['id']}' has a different Hypervisor generation "
            f"['{given.upper()}'] than the parent gallery image Hypervisor generation "
            f"['{wanted.upper()}']."
        )

    def source_luns(self, arm: ArmModel, storage: dict[str, Any]) -> set[int]:
        """The data-disk LUNs of the version's source (which must exist and be usable)."""
        source_id = (storage.get("source") or {}).get("id")
        if source_id:
            source = arm.get(source_id)
            if source is None:
                raise HttpError(404, "SourceNotFound", f"The source '{source_id}' was not found.")
            if source["type"] == VERSION_TYPE and is_customer_key_encrypted(source):
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"The image version '{source_id}' is "
                    "encrypted with customer-managed keys: it cannot be copied or "
                    "used as a source.",
                )
            if source["type"] == VERSION_TYPE:
                disks = source["properties"]["storageProfile"].get("dataDiskImages") or []
            elif source["type"] == MANAGED_IMAGE_TYPE:
                disks = source["properties"].get("storageProfile", {}).get("dataDisks") or []
            else:
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"'{source_id}' is not a managed image or an image version.",
                )
            return {int(d["lun"]) for d in disks}
        os_source = ((storage.get("osDiskImage") or {}).get("source") or {}).get("id")
        if not os_source:
            raise HttpError(
                400, "InvalidParameter", "storageProfile needs source.id or osDiskImage.source.id."
            )
        luns = set()
        for disk in [storage.get("osDiskImage") or {}, *(storage.get("dataDiskImages") or [])]:
            sid = (disk.get("source") or {}).get("id")
            if not sid or arm.get(sid) is None:
                raise HttpError(404, "SourceNotFound", f"The snapshot '{sid}' was not found.")
            if "lun" in disk:
                luns.add(int(disk["lun"]))
        return luns

    def check_region_encryption(
        self, ctx: PutContext, region: dict[str, Any], source_luns: set[int]
    ) -> None:
        """Each DES exists, is in the image's subscription and in the region, and can use
        its key; the data-disk LUNs are the source's."""
        encryption = region.get("encryption") or {}
        if not encryption:
            return
        entries = [("osDiskImage", encryption.get("osDiskImage") or {})]
        luns = []
        for disk in encryption.get("dataDiskImages") or []:
            luns.append(int(disk["lun"]))
            entries.append((f"dataDiskImages[lun {disk['lun']}]", disk))
        unknown = sorted(set(luns) - source_luns)
        if unknown:
            raise HttpError(
                400,
                "InvalidParameter",
                f"Region {region['name']}: data disk LUNs "
                f"{unknown} are not data disks of the source (it has "
                f"{sorted(source_luns)}).",
            )
        for where, entry in entries:
            des_id = entry.get("diskEncryptionSetId")
            if not des_id:
                continue
            if ids.subscription_of(des_id).lower() != ctx.rid.subscription.lower():
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"Region {region['name']} {where}: "
                    f"the disk encryption set '{des_id}' is in another subscription; "
                    "it must be in the image's subscription.",
                )
            des = ctx.arm.get(des_id)
            if des is None or des["type"] != DISK_ENCRYPTION_SET_TYPE:
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"Region {region['name']} {where}: the "
                    f"disk encryption set '{des_id}' was not found.",
                )
            if des["location"] != _norm(region["name"]):
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"Region {region['name']} {where}: the "
                    f"disk encryption set '{des['name']}' is in {des['location']}; "
                    "a region's disk encryption set must be in that region.",
                )
            key_url = des["properties"]["activeKey"]["keyUrl"]
            vault, _, _ = self.des_hooks.keyvault.resolve_key_url(key_url)
            self.des_hooks.check_access(ctx.arm, des, vault, key_url)

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        props = resource["properties"]
        profile = props.setdefault("publishingProfile", {})
        profile.setdefault("replicaCount", 1)
        profile.setdefault("targetRegions", [{"name": resource["location"]}])
        for region in profile["targetRegions"]:
            region.setdefault("regionalReplicaCount", profile["replicaCount"])
            region.setdefault(
                "storageAccountType", profile.get("storageAccountType", "Standard_LRS")
            )
        profile["publishedDate"] = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        self.disk_images(ctx.arm, props.setdefault("storageProfile", {}))
        resource["_replication_started"] = time.monotonic()
        resource["_generation_conflict"] = self.generation_conflict(
            ctx.arm, resource["id"], props.get("storageProfile") or {}
        )

    @staticmethod
    def disk_images(arm: ArmModel, storage: dict[str, Any]) -> None:
        """A version made from a managed image shows that image's disks as its own
        `osDiskImage` and `dataDiskImages` (what `az vm create --image <version>` reads), as
        in the GalleryImageVersion_Get examples of azure-rest-api-specs
        (specification/compute/resource-manager/Microsoft.Compute/GalleryRP/.../examples)."""
        source = arm.get((storage.get("source") or {}).get("id") or "")
        if source is None or source["type"] != MANAGED_IMAGE_TYPE:
            return
        image = source["properties"].get("storageProfile") or {}
        os_disk = image.get("osDisk") or {}
        storage.setdefault(
            "osDiskImage",
            {
                "sizeInGB": os_disk.get("diskSizeGB", 30),
                "hostCaching": os_disk.get("caching", "ReadWrite"),
            },
        )
        storage.setdefault(
            "dataDiskImages",
            [
                {
                    "lun": disk["lun"],
                    "sizeInGB": disk.get("diskSizeGB", 4),
                    "hostCaching": disk.get("caching", "None"),
                }
                for disk in image.get("dataDisks") or []
            ],
        )

    def duration(self, arm: ArmModel, resource: dict[str, Any]) -> float:
        return self.replication_seconds

    def failure(self, arm: ArmModel, resource: dict[str, Any]) -> dict[str, str] | None:
        if resource.get("_generation_conflict"):
            return {"code": "Conflict", "message": resource["_generation_conflict"]}
        failed = [
            r["name"]
            for r in resource["properties"]["publishingProfile"]["targetRegions"]
            if _norm(r["name"]) in self.failing_regions
        ]
        if not failed:
            return None
        return {
            "code": "ReplicationFailed",
            "message": f"Replication of the image version failed in {', '.join(failed)}.",
        }

    def expand(self, resource: dict[str, Any], what: str) -> dict[str, Any]:
        if what.lower() != "replicationstatus":
            return {}
        return {"replicationStatus": self.replication_status(resource)}

    def replication_status(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Per-region progress, as `$expand=ReplicationStatus` shows it."""
        elapsed = time.monotonic() - resource.get("_replication_started", 0.0)
        state = resource["properties"].get("provisioningState")
        summary = []
        for region in resource["properties"]["publishingProfile"]["targetRegions"]:
            progress = (
                100
                if state == "Succeeded"
                else min(99, int(100 * elapsed / max(self.replication_seconds, 1e-6)))
            )
            name = region["name"]
            if _norm(name) in self.failing_regions and (state == "Failed" or progress >= 99):
                summary.append(
                    {
                        "region": name,
                        "state": "Failed",
                        "progress": progress,
                        "details": "Replication failed (injected by the emulator).",
                    }
                )
            else:
                summary.append(
                    {
                        "region": name,
                        "progress": progress,
                        "state": "Completed" if progress == 100 else "Replicating",
                    }
                )
        states = {s["state"] for s in summary}
        aggregated = (
            "Failed"
            if "Failed" in states
            else "Completed"
            if states == {"Completed"}
            else "InProgress"
        )
        return {"aggregatedState": aggregated, "summary": summary}


class GalleryHooks(TypeHooks):
    """Sharing a gallery that holds customer-key-encrypted versions is refused."""

    def share(self, arm: ArmModel, gallery: dict[str, Any], body: dict[str, Any]) -> dict:
        for version in arm.children(gallery["id"], VERSION_TYPE):
            if is_customer_key_encrypted(version):
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"The gallery '{gallery['name']}' holds "
                    f"the image version '{version['id']}' encrypted with "
                    "customer-managed keys, which cannot be shared.",
                )
        gallery["properties"]["sharingProfile"] = {
            "permissions": body.get("operationType") and "Groups",
            "groups": body.get("groups"),
        }
        return {"id": gallery["id"], "sharingProfile": gallery["properties"]["sharingProfile"]}

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        resource["properties"].setdefault(
            "identifier", {"uniqueName": f"{ctx.rid.subscription}-{ctx.rid.name.upper()}"}
        )


class ManagedImageHooks(TypeHooks):
    """A managed image's disks (the LUNs a version's encryption must match)."""

    def validate(self, ctx: PutContext) -> None:
        storage = (ctx.body.get("properties") or {}).get("storageProfile") or {}
        if not storage.get("osDisk"):
            raise HttpError(400, "InvalidParameter", "storageProfile.osDisk is required.")


def register_types(arm: ArmModel, des_hooks: DiskEncryptionSetHooks) -> ImageVersionHooks:
    """Serve galleries, image definitions, image versions, managed images and snapshots;
    returns the image-version rules (tests set failing regions on them)."""
    gallery = GalleryHooks()
    versions = ImageVersionHooks(des_hooks)
    arm.register_type(
        TypeSpec(
            GALLERY_TYPE,
            lro="azure-async-operation",
            create_status=201,
            hooks=gallery,
            delete_lro="location",
            actions={"share": gallery.share},
        )
    )
    arm.register_type(
        TypeSpec(IMAGE_TYPE, lro="azure-async-operation", create_status=201, delete_lro="location")
    )
    arm.register_type(
        TypeSpec(
            VERSION_TYPE,
            lro="azure-async-operation",
            create_status=201,
            hooks=versions,
            delete_lro="location",
        )
    )
    arm.register_type(
        TypeSpec(
            MANAGED_IMAGE_TYPE,
            lro="azure-async-operation",
            create_status=201,
            hooks=ManagedImageHooks(),
        )
    )
    arm.register_type(TypeSpec(SNAPSHOT_TYPE, lro="azure-async-operation", create_status=202))
    return versions
