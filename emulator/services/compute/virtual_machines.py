"""Virtual machines created from gallery image versions, with their managed disks encrypted
by disk encryption sets (one per disk)."""

from __future__ import annotations

import uuid
from typing import Any

from emulator.http import HttpError
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.compute.gallery import VERSION_TYPE, version_encryptions
from emulator.services.compute.models import DISK_ENCRYPTION_SET_TYPE, DiskEncryptionSetHooks

VM_TYPE = "Microsoft.Compute/virtualMachines"
DISK_TYPE = "Microsoft.Compute/disks"


class VirtualMachineHooks(TypeHooks):
    """The image is replicated in the VM's region; each disk's set is in that region and can
    use its key; customer-key images never give platform-key disks; NICs exist."""

    def __init__(self, des_hooks: DiskEncryptionSetHooks) -> None:
        self.des_hooks = des_hooks

    def validate(self, ctx: PutContext) -> None:
        if ctx.existing:
            return
        location = ctx.body.get("location", "").lower().replace(" ", "")
        props = ctx.body.get("properties") or {}
        storage = props.get("storageProfile") or {}
        image_id = (storage.get("imageReference") or {}).get("id")
        image = ctx.arm.get(image_id) if image_id else None
        if image is None or image["type"] != VERSION_TYPE:
            raise HttpError(
                400,
                "InvalidParameter",
                f"storageProfile.imageReference.id "
                f"'{image_id}' is not an existing gallery image version.",
            )
        regions = version_encryptions(image["properties"])
        if location not in regions:
            raise HttpError(
                400,
                "ImageVersionNotReplicatedToRegion",
                f"The image version is "
                f"not replicated to '{location}' (it is in {sorted(regions)}).",
            )
        luns = {
            int(d["lun"])
            for d in image["properties"]["storageProfile"].get("dataDiskImages")
            or self._source_luns(ctx.arm, image)
        }
        disks = [("storageProfile.osDisk", storage.get("osDisk") or {})]
        for disk in storage.get("dataDisks") or []:
            if int(disk.get("lun", -1)) not in luns:
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"storageProfile.dataDisks lun "
                    f"{disk.get('lun')} is not a data disk of the image ({sorted(luns)}).",
                )
            disks.append((f"storageProfile.dataDisks[lun {disk['lun']}]", disk))
        for where, disk in disks:
            des_id = ((disk.get("managedDisk") or {}).get("diskEncryptionSet") or {}).get("id")
            if des_id:
                self._check_des(ctx.arm, where, des_id, location)
            elif regions[location]:
                raise HttpError(
                    400,
                    "InvalidParameter",
                    f"{where}: the image is encrypted with "
                    "customer-managed keys; its disks cannot use platform-managed "
                    "keys. Give the disk a disk encryption set.",
                )
        for nic in (props.get("networkProfile") or {}).get("networkInterfaces") or []:
            if ctx.arm.get(nic.get("id", "")) is None:
                raise HttpError(
                    400,
                    "InvalidResourceReference",
                    f"The network interface '{nic.get('id')}' was not found.",
                )

    @staticmethod
    def _source_luns(arm: ArmModel, image: dict[str, Any]) -> list[dict[str, Any]]:
        source = arm.get((image["properties"]["storageProfile"].get("source") or {}).get("id", ""))
        return (source or {}).get("properties", {}).get("storageProfile", {}).get("dataDisks") or []

    def _check_des(self, arm: ArmModel, where: str, des_id: str, location: str) -> None:
        des = arm.get(des_id)
        if des is None or des["type"] != DISK_ENCRYPTION_SET_TYPE:
            raise HttpError(
                400,
                "InvalidParameter",
                f"{where}: the disk encryption set '{des_id}' was not found.",
            )
        if des["location"] != location:
            raise HttpError(
                400,
                "InvalidParameter",
                f"{where}: the disk encryption set "
                f"'{des['name']}' is in {des['location']}, the VM in {location}.",
            )
        key_url = des["properties"]["activeKey"]["keyUrl"]
        vault, _, _ = self.des_hooks.keyvault.resolve_key_url(key_url)
        self.des_hooks.check_access(arm, des, vault, key_url)

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        props = resource["properties"]
        props.setdefault("vmId", str(uuid.uuid4()))
        storage = props.setdefault("storageProfile", {})
        group = f"/subscriptions/{ctx.rid.subscription}/resourceGroups/{ctx.rid.resource_group}"
        os_disk = storage.setdefault("osDisk", {})
        os_disk.setdefault("name", f"{ctx.rid.name}_OsDisk_1_{uuid.uuid4().hex[:12]}")
        os_disk.setdefault("createOption", "FromImage")
        for disk in [os_disk, *(storage.get("dataDisks") or [])]:
            disk.setdefault(
                "name", f"{ctx.rid.name}_disk{disk.get('lun', 0) + 2}_{uuid.uuid4().hex[:12]}"
            )
            disk.setdefault("managedDisk", {})["id"] = (
                f"{group}/providers/{DISK_TYPE}/{disk['name']}"
            )

    def succeeded(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        storage = resource["properties"]["storageProfile"]
        for disk in [storage["osDisk"], *(storage.get("dataDisks") or [])]:
            managed = disk["managedDisk"]
            des_id = (managed.get("diskEncryptionSet") or {}).get("id")
            encryption = {"type": "EncryptionAtRestWithPlatformKey"}
            if des_id:
                des = arm.get(des_id) or {}
                encryption = {
                    "type": des.get("properties", {}).get(
                        "encryptionType", "EncryptionAtRestWithCustomerKey"
                    ),
                    "diskEncryptionSetId": des_id,
                }
            arm.resources[managed["id"].lower()] = {
                "id": managed["id"],
                "name": disk["name"],
                "type": DISK_TYPE,
                "location": resource["location"],
                "tags": {},
                "managedBy": resource["id"],
                "properties": {
                    "encryption": encryption,
                    "provisioningState": "Succeeded",
                    "diskState": "Attached",
                },
            }

    def deleted(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        """Disks stay (as with Azure's default delete option), detached."""
        for disk in arm.children(ids.parse(resource["id"]).scope, DISK_TYPE):
            if disk.get("managedBy", "").lower() == resource["id"].lower():
                disk.pop("managedBy")
                disk["properties"]["diskState"] = "Unattached"


def register_types(arm: ArmModel, des_hooks: DiskEncryptionSetHooks) -> None:
    """Serve VMs (201 + Azure-AsyncOperation) and the managed disks they create."""
    arm.register_type(
        TypeSpec(
            VM_TYPE,
            lro="azure-async-operation",
            create_status=201,
            hooks=VirtualMachineHooks(des_hooks),
            delete_lro="location",
        )
    )
    arm.register_type(
        TypeSpec(DISK_TYPE, lro="azure-async-operation", create_status=202, delete_lro="location")
    )
