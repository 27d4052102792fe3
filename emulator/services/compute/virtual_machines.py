"""Virtual machines created from gallery image versions, with their managed disks encrypted
by disk encryption sets (one per disk), and their power state.

"If you disable or delete your key, any VMs with disks using that key will automatically shut
down. After this, the VMs won't be usable unless the key is enabled again or you assign a new
key." (learn.microsoft.com/azure/virtual-machines/disk-encryption, "Full control of your
keys"). So a running VM whose disks' set cannot use its key (disabled, deleted, access
removed) reports `PowerState/stopped` in its instance view (`$expand=instanceView`), with the
reason as the status message; `start` fails while the key is unusable and succeeds once it is
usable again. Azure does not start the VM again by itself. `deallocate` leaves the VM
`PowerState/deallocated`, which a confidential VM set's key change waits for.

A confidential VM (`securityProfile.securityType: ConfidentialVM`) names its OS disk's set in
`managedDisk.securityProfile` with `securityEncryptionType: DiskWithVMGuestState`, a set of
type ConfidentialVmEncryptedWithCustomerKey whose key the Confidential VM Orchestrator may get
and release (https://learn.microsoft.com/azure/confidential-computing/
quick-create-confidential-vm-azure-cli)."""

from __future__ import annotations

import uuid
from typing import Any

from emulator.http import HttpError, Response
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.compute.gallery import VERSION_TYPE, version_encryptions
from emulator.services.compute.models import (
    CONFIDENTIAL,
    DISK_ENCRYPTION_SET_TYPE,
    DiskEncryptionSetHooks,
    check_encryption_at_host,
    disk_sets,
)
from emulator.services.entra.applications import CONFIDENTIAL_VM_ORCHESTRATOR

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
        security = props.get("securityProfile") or {}
        at_host = {"enableEncryptionAtHost": security.get("encryptionAtHost")}
        check_encryption_at_host(ctx.arm, ctx.rid.subscription, "properties", at_host)
        confidential = security.get("securityType") == "ConfidentialVM"
        if confidential:
            _check_confidential_image(ctx.arm, image)
        for where, disk in disks:
            for des_id in disk_sets(disk):
                des = self._check_des(ctx.arm, where, des_id, location)
                self._check_confidential(ctx.arm, where, disk, des, confidential)
            if not disk_sets(disk) and regions[location]:
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

    def _check_confidential(
        self,
        arm: ArmModel,
        where: str,
        disk: dict[str, Any],
        des: dict[str, Any],
        confidential: bool,
    ) -> None:
        """A confidential set only as a confidential VM's OS disk set (through the disk's
        securityProfile), its key released to the Confidential VM Orchestrator."""
        security = (disk.get("managedDisk") or {}).get("securityProfile") or {}
        security_set = str((security.get("diskEncryptionSet") or {}).get("id", ""))
        via_security = security_set.lower() == des["id"].lower()
        if (des["properties"].get("encryptionType") == CONFIDENTIAL) != via_security:
            raise HttpError(
                400,
                "InvalidParameter",
                f"{where}: a {CONFIDENTIAL} set is named in managedDisk.securityProfile."
                "diskEncryptionSet, any other set in managedDisk.diskEncryptionSet "
                f"('{des['name']}' is {des['properties'].get('encryptionType')}).",
            )
        if not via_security:
            return
        if not confidential or security.get("securityEncryptionType") != "DiskWithVMGuestState":
            raise HttpError(
                400,
                "InvalidParameter",
                f"{where}: a {CONFIDENTIAL} set needs securityProfile.securityType "
                "ConfidentialVM and managedDisk.securityProfile.securityEncryptionType "
                "DiskWithVMGuestState.",
            )
        tenant = arm.subscription(ids.subscription_of(des["id"])).tenant_id
        key_url = des["properties"]["activeKey"]["keyUrl"]
        vault, key, _ = self.des_hooks.keyvault.resolve_key_url(key_url)
        orchestrator = arm.entra.by_client_id(CONFIDENTIAL_VM_ORCHESTRATOR, tenant)
        granted = (
            self.des_hooks.keyvault.effective_key_operations(
                vault, orchestrator.object_id, key.name
            )
            if orchestrator
            else set()
        )
        # release is what the platform needs: Learn's ARM quickstart grants the orchestrator
        # only "Managed HSM Crypto Service Release User" (the release action) on an HSM
        # (https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-arm)
        missing = sorted({"release"} - granted)
        if missing:
            problem = (
                "is not installed (its service principal is missing)"
                if orchestrator is None
                else f"lacks key permissions {', '.join(missing)}"
            )
            raise HttpError(
                400,
                "KeyVaultAccessForbidden",
                f"{where}: the Confidential VM Orchestrator (appId {CONFIDENTIAL_VM_ORCHESTRATOR})"
                f" of tenant '{tenant}' {problem} on '{key_url}'.",
            )

    def _check_des(self, arm: ArmModel, where: str, des_id: str, location: str) -> dict[str, Any]:
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
        return des

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        props = resource["properties"]
        props.setdefault("vmId", str(uuid.uuid4()))
        storage = props.setdefault("storageProfile", {})
        group = f"/subscriptions/{ctx.rid.subscription}/resourceGroups/{ctx.rid.resource_group}"
        os_disk = storage.setdefault("osDisk", {})
        # a name of null (what `az vm create` sends) means "name it for me", as Azure does
        os_disk["name"] = os_disk.get("name") or f"{ctx.rid.name}_OsDisk_1_{uuid.uuid4().hex}"
        os_disk.setdefault("createOption", "FromImage")
        for disk in storage.get("dataDisks") or []:
            disk["name"] = (
                disk.get("name")
                or f"{ctx.rid.name}_disk{disk.get('lun', 0) + 2}_{uuid.uuid4().hex}"
            )
        for disk in [os_disk, *(storage.get("dataDisks") or [])]:
            disk.setdefault("managedDisk", {})["id"] = (
                f"{group}/providers/{DISK_TYPE}/{disk['name']}"
            )

    def key_problem(self, arm: ArmModel, resource: dict[str, Any]) -> HttpError | None:
        """Why a disk's set cannot use its key now, or None."""
        storage = resource["properties"].get("storageProfile") or {}
        for disk in [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]:
            for des_id in disk_sets(disk):
                des = arm.get(des_id)
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

    def deallocate(self, arm: ArmModel, resource: dict[str, Any], body: dict[str, Any]) -> Response:
        """`POST …/deallocate`: stopped and its compute released."""
        resource["_power"] = "deallocated"
        resource.pop("_power_message", None)
        return Response(200)

    def succeeded(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        resource.setdefault("_power", "running")
        storage = resource["properties"]["storageProfile"]
        for disk in [storage["osDisk"], *(storage.get("dataDisks") or [])]:
            managed = disk["managedDisk"]
            des_id = next(iter(disk_sets(disk)), None)
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


CONFIDENTIAL_IMAGES = ("ConfidentialVM", "ConfidentialVmSupported")


def _check_confidential_image(arm: ArmModel, version: dict[str, Any]) -> None:
    """A confidential VM comes from an image definition whose SecurityType feature allows it
    (features [{"name": "SecurityType", "value": "ConfidentialVM"}]:
    https://github.com/Azure/azure-powershell/issues/28657)."""
    definition = arm.get(version["id"].rsplit("/versions/", 1)[0]) or {}
    features = (definition.get("properties") or {}).get("features") or []
    security = next(
        (f.get("value") for f in features if str(f.get("name")).lower() == "securitytype"), None
    )
    if security not in CONFIDENTIAL_IMAGES:
        raise HttpError(
            400,
            "InvalidParameter",
            f"storageProfile.imageReference.id: the image definition "
            f"'{definition.get('name')}' has SecurityType {security}; a confidential VM needs "
            f"one of {', '.join(CONFIDENTIAL_IMAGES)}.",
        )


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
            actions={
                "start": hooks.start,
                "poweroff": hooks.power_off,
                "deallocate": hooks.deallocate,
            },
        )
    )
    arm.register_type(
        TypeSpec(DISK_TYPE, lro="azure-async-operation", create_status=202, delete_lro="location")
    )
