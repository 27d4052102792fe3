"""Procedure A, step 6: a VM from the encrypted image version, its OS disk and each data
disk encrypted by a disk encryption set (`--os-disk-encryption-set`,
`--data-disk-encryption-sets`)."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id, resource_id
from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from blocks.azure import AzureCredentials
from byok.errors import VerificationFailed
from byok.parameters import parse_request
from byok.validation import InvalidRequest, check_name, region_key
from clients.azure import AzureClients
from flows.gallery import check_des
from tasks.refusal import refuse_quietly
from tasks.retry import STEP_RETRIES
from tasks.run_lock import resource_lock
from tasks.subscription import check_subscription_regions


class VmFromImageRequest(BaseModel):
    """The VM, its image version, its disks' sets and its network."""

    azure_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK Azure Credentials' block."
    )
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the VM (must exist).")
    location: str = Field(..., description="A region the image version is replicated to.")
    vm_name: str = Field(..., pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$", description="VM name.")
    image_version_id: str = Field(..., description="The encrypted gallery image version.")
    os_disk_encryption_set_id: str = Field(..., description="Set of the OS disk.")
    data_disk_encryption_set_ids: list[str] = Field(
        default_factory=list, description="One set per data disk of the image, in LUN order."
    )
    vm_size: str = Field("Standard_D2s_v5", description="VM size.")
    admin_username: str = Field("azureuser", description="Administrator user name.")
    ssh_public_key: str = Field(..., description="OpenSSH public key of the administrator.")
    subnet_id: str | None = Field(
        None,
        description="Existing subnet; default: a minimal virtual network is created for the VM.",
    )
    wait_for_other_run: bool = Field(
        False,
        description="When another run is creating this VM: wait for it (default: fail at once).",
    )


class VmResult(BaseModel):
    """The VM and the set each of its disks reports."""

    id: str
    os_disk_encryption_set_id: str | None
    data_disk_encryption_set_ids: dict[int, str | None]


@task(name="Create network resources", **STEP_RETRIES)
def ensure_network(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    vm_name: str,
    location: str,
    subnet_id: str | None,
) -> str:
    """A NIC in the given subnet, or in a minimal virtual network made for the VM (get or
    create each); returns the NIC id."""
    network = AzureClients.of(credentials, subscription_id).network()
    if subnet_id is None:
        try:
            vnet = network.virtual_networks.get(rg, f"{vm_name}-vnet")
        except ResourceNotFoundError:
            vnet = network.virtual_networks.begin_create_or_update(
                rg,
                f"{vm_name}-vnet",
                {
                    "location": location,
                    "properties": {
                        "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                        "subnets": [
                            {"name": "default", "properties": {"addressPrefix": "10.0.0.0/24"}}
                        ],
                    },
                },
            ).result()
        subnet_id = str((vnet.properties.subnets or [])[0].id)
    try:
        return str(network.network_interfaces.get(rg, f"{vm_name}-nic").id)
    except ResourceNotFoundError:
        nic = network.network_interfaces.begin_create_or_update(
            rg,
            f"{vm_name}-nic",
            {
                "location": location,
                "properties": {
                    "ipConfigurations": [
                        {
                            "name": "ipconfig1",
                            "properties": {
                                "subnet": {"id": subnet_id},
                                "privateIPAllocationMethod": "Dynamic",
                            },
                        }
                    ]
                },
            },
        ).result()
        return str(nic.id)


def read_image_version(clients: AzureClients, image_version_id: str) -> Any:
    """The gallery image version named by the request, or InvalidRequest."""
    p = image_version_id.strip("/").split("/")
    try:
        return clients.compute().gallery_image_versions.get(p[3], p[7], p[9], p[11])
    except (ResourceNotFoundError, IndexError):
        raise InvalidRequest(
            "image_version_id", image_version_id, "no such image version"
        ) from None


def data_disk_luns(clients: AzureClients, version: Any) -> list[int]:
    """The image's data-disk LUNs, in order."""
    disks = version.properties.storage_profile.data_disk_images or []
    if disks:
        return sorted(int(d.lun) for d in disks)
    source = version.properties.storage_profile.source
    s = str(source.id).strip("/").split("/") if source and source.id else []
    if len(s) == 8 and s[6].lower() == "images":
        image = clients.compute().images.get(s[3], s[7])
        return sorted(int(d.lun) for d in image.properties.storage_profile.data_disks or [])
    return []


@task(name="Validate request", **STEP_RETRIES)
def validate_vm_request(
    credentials: AzureCredentials, request: VmFromImageRequest, subscription: str
) -> dict[int, str]:
    """Before any write: the version exists and is replicated to the VM's region, one set per
    data disk, each set in the subscription and the region with its key, the subnet exists.
    Returns LUN → set."""
    check_name("resource_group", "resource_group", request.resource_group)
    clients = AzureClients.of(credentials, subscription)
    version = read_image_version(clients, request.image_version_id)
    regions = [r.name for r in version.properties.publishing_profile.target_regions or []]
    if region_key(request.location) not in {region_key(r) for r in regions}:
        raise InvalidRequest(
            "location", request.location, f"the image version is replicated to {regions} only"
        )
    luns = data_disk_luns(clients, version)
    if len(request.data_disk_encryption_set_ids) != len(luns):
        raise InvalidRequest(
            "data_disk_encryption_set_ids",
            request.data_disk_encryption_set_ids,
            f"one set per data disk of the image: it has LUNs {luns}",
        )
    data_sets = dict(zip(luns, request.data_disk_encryption_set_ids, strict=True))
    sets = {"os_disk_encryption_set_id": request.os_disk_encryption_set_id}
    sets |= {f"data_disk_encryption_set_ids[{i}]": s for i, s in enumerate(data_sets.values())}
    for field, set_id in sets.items():
        check_des(clients, field, set_id, subscription, request.location)
    if request.subnet_id:
        subnet = request.subnet_id
        if not is_valid_resource_id(subnet):
            raise InvalidRequest("subnet_id", subnet, "not a subnet id")
        p = parse_resource_id(subnet)
        try:
            names = (p["resource_group"], p["name"], p["child_name_1"])
            network = AzureClients.of(credentials, str(p["subscription"])).network()
            network.subnets.get(*(str(n) for n in names))
        except (ResourceNotFoundError, KeyError):
            raise InvalidRequest("subnet_id", subnet, "no such subnet") from None
    return data_sets


@task(name="Create the VM with encrypted disks", **STEP_RETRIES)
def ensure_vm(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    name: str,
    body: dict[str, Any],
) -> None:
    """Create the VM (get or create)."""
    vms = AzureClients.of(credentials, subscription_id).compute().virtual_machines
    try:
        vms.get(rg, name)
        get_run_logger().info("VM %s exists", name)
    except ResourceNotFoundError:
        vms.begin_create_or_update(rg, name, body).result()
        get_run_logger().info("Created VM %s", name)


@task(name="Verify the VM's disk encryption", **STEP_RETRIES)
def verify_vm_disks(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    name: str,
    os_set: str,
    data_sets: dict[int, str],
) -> VmResult:
    """Each managed disk of the VM reports the requested set."""
    clients = AzureClients.of(credentials, subscription_id)
    vm = clients.compute().virtual_machines.get(rg, name)
    storage = vm.properties.storage_profile

    def disk_set(disk_id: str | None) -> str | None:
        p = str(disk_id).strip("/").split("/")
        disk = clients.compute().disks.get(p[3], p[7])
        return disk.properties.encryption.disk_encryption_set_id

    result = VmResult(
        id=str(vm.id),
        os_disk_encryption_set_id=disk_set(storage.os_disk.managed_disk.id),
        data_disk_encryption_set_ids={
            int(d.lun): disk_set(d.managed_disk.id) for d in storage.data_disks or []
        },
    )
    wanted = {"os": os_set.lower(), "data": {k: v.lower() for k, v in data_sets.items()}}
    actual = {
        "os": (result.os_disk_encryption_set_id or "").lower(),
        "data": {k: (v or "").lower() for k, v in result.data_disk_encryption_set_ids.items()},
    }
    if actual != wanted:
        raise VerificationFailed(str(vm.id), f"its disks report {actual}, requested {wanted}")
    return result


@flow(name="create-vm-from-encrypted-image", validate_parameters=False)
@refuse_quietly
def create_vm_from_encrypted_image(request: VmFromImageRequest) -> VmResult:
    """Check the subscription, region, image version, data disks and sets → one run per VM →
    network (minimal, or the given subnet) → VM with each disk's set → verify the disks."""
    request = parse_request(VmFromImageRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub = request.subscription_id or credentials.subscription_id
    check_subscription_regions(credentials, sub, {"location": request.location})
    data_sets = validate_vm_request(credentials, request, sub)
    vm_id = resource_id(
        subscription=sub,
        resource_group=request.resource_group,
        namespace="Microsoft.Compute",
        type="virtualMachines",
        name=request.vm_name,
    )
    with resource_lock(vm_id, wait=request.wait_for_other_run):
        return _create_vm(credentials, request, sub, data_sets)


def _create_vm(
    credentials: AzureCredentials, request: VmFromImageRequest, sub: str, data_sets: dict[int, str]
) -> VmResult:
    """The writes of the flow, once the request is valid and the VM's lock held."""
    rg = request.resource_group
    nic = ensure_network(credentials, sub, rg, request.vm_name, request.location, request.subnet_id)

    def managed(set_id: str) -> dict[str, Any]:
        return {"storageAccountType": "Premium_LRS", "diskEncryptionSet": {"id": set_id}}

    ensure_vm(
        credentials,
        sub,
        rg,
        request.vm_name,
        {
            "location": request.location,
            "properties": {
                "hardwareProfile": {"vmSize": request.vm_size},
                "storageProfile": {
                    "imageReference": {"id": request.image_version_id},
                    "osDisk": {
                        "createOption": "FromImage",
                        "managedDisk": managed(request.os_disk_encryption_set_id),
                    },
                    "dataDisks": [
                        {"lun": lun, "createOption": "FromImage", "managedDisk": managed(set_id)}
                        for lun, set_id in data_sets.items()
                    ],
                },
                "osProfile": {
                    "computerName": request.vm_name,
                    "adminUsername": request.admin_username,
                    "linuxConfiguration": {
                        "disablePasswordAuthentication": True,
                        "ssh": {
                            "publicKeys": [
                                {
                                    "path": f"/home/{request.admin_username}/.ssh/authorized_keys",
                                    "keyData": request.ssh_public_key,
                                }
                            ]
                        },
                    },
                },
                "networkProfile": {"networkInterfaces": [{"id": nic}]},
            },
        },
    )
    return verify_vm_disks(
        credentials, sub, rg, request.vm_name, request.os_disk_encryption_set_id, data_sets
    )
