"""Virtual machines created from gallery image versions, with their managed disks encrypted
by disk encryption sets (one per disk), and their power state.

"If you disable or delete your key, any VMs with disks using that key will automatically shut
down. After this, the VMs won't be usable unless the key is enabled again or you assign a new
key." (learn.microsoft.com/azure/virtual-machines/disk-encryption, "Full control of your
keys"). So a running VM whose disks' set cannot use its key (disabled, deleted, access
removed) reports `PowerState/stopped` in its instance view (`$expand=instanceView`), with the
reason as the status message; `start` fails while the key is unusable and succeeds once it is
usable again. Azure does not start the VM again by itself."""

from __future__ import annotations

import uuid
from typing import Any

from emulator.http import HttpError, Response
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

    def key_problem(self, arm: ArmModel, resource: dict[str, Any]) -> HttpError | None:
        """Why a disk's set cannot use its key now, or None."""
        storage = resource["properties"].get("storageProfile") or {}
        for disk in [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]:
            des_id = ((disk.get("managedDisk") or {}).get("diskEncryptionSet") or {}).get("id")
            des = arm.get(des_id) if des_id else None
            problem = self.des_hooks.key_problem(arm, des) if des else None
            if problem is not None:
                return problem
        return None

    def refresh(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        """A running VM whose disks' key became unusable shuts down."""
        if resource.get("_power") != "running":
            return
        problem = self.key_problem(arm, resource)
        if problem is not None:
            resource["_power"] = "stopped"
            resource["_power_message"] = f"{problem.code}: {problem.message}"

    def expand(self, resource: dict[str, Any], what: str) -> dict[str, Any]:
        if what.lower() != "instanceview":
            return {}
        power = resource.get("_power", "running")
        status = {"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"}
        if resource.get("_power_message"):
            status["message"] = resource["_power_message"]
        provisioning = {
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
        }
        return {"instanceView": {"statuses": [provisioning, status]}}

    def start(self, arm: ArmModel, resource: dict[str, Any], body: dict[str, Any]) -> Response:
        """`POST …/start`: refused while a disk's key is unusable."""
        problem = self.key_problem(arm, resource)
        if problem is not None:
            raise HttpError(
                400,
                problem.code,
                f"The VM '{resource['name']}' cannot start: its disks' key is unusable. "
                f"{problem.message}",
            )
        resource["_power"] = "running"
        resource.pop("_power_message", None)
        return Response(200)

    def power_off(self, arm: ArmModel, resource: dict[str, Any], body: dict[str, Any]) -> Response:
        """`POST …/powerOff`."""
        resource["_power"] = "stopped"
        resource.pop("_power_message", None)
        return Response(200)

    def succeeded(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        resource.setdefault("_power", "running")
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
    hooks = VirtualMachineHooks(des_hooks)
    arm.register_type(
        TypeSpec(
            VM_TYPE,
            lro="azure-async-operation",
            create_status=201,
            hooks=hooks,
            delete_lro="location",
            actions={"start": hooks.start, "poweroff": hooks.power_off},
        )
    )
    arm.register_type(
        TypeSpec(DISK_TYPE, lro="azure-async-operation", create_status=202, delete_lro="location")
    )
