"""Procedure A, step 6: a VM from the encrypted image version, its OS disk and each data
disk encrypted by a disk encryption set (`--os-disk-encryption-set`,
`--data-disk-encryption-sets`)."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from blocks.azure import AzureCredentials
from byok.validation import InvalidRequest, check_name
from clients.azure import AzureClients
from tasks.retry import STEP_RETRIES


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
    network = AzureClients(credentials, subscription_id).network()
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


def data_disk_luns(clients: AzureClients, image_version_id: str) -> list[int]:
    """The image's data-disk LUNs, in order."""
    p = image_version_id.strip("/").split("/")
    try:
        version = clients.compute().gallery_image_versions.get(p[3], p[7], p[9], p[11])
    except (ResourceNotFoundError, IndexError):
        raise InvalidRequest(
            "image_version_id", image_version_id, "no such image version"
        ) from None
    disks = version.properties.storage_profile.data_disk_images or []
    if disks:
        return sorted(int(d.lun) for d in disks)
    source = version.properties.storage_profile.source
    s = str(source.id).strip("/").split("/") if source and source.id else []
    if len(s) == 8 and s[6].lower() == "images":
        image = clients.compute().images.get(s[3], s[7])
        return sorted(int(d.lun) for d in image.properties.storage_profile.data_disks or [])
    return []


@task(name="Create the VM with encrypted disks", **STEP_RETRIES)
def ensure_vm(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    name: str,
    body: dict[str, Any],
) -> None:
    """Create the VM (get or create)."""
    vms = AzureClients(credentials, subscription_id).compute().virtual_machines
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
    clients = AzureClients(credentials, subscription_id)
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
        raise RuntimeError(f"VM {name} disks report {actual}, requested {wanted}")
    return result


@flow(name="create-vm-from-encrypted-image")
def create_vm_from_encrypted_image(request: VmFromImageRequest) -> VmResult:
    """Check the image's data disks against the sets → network (minimal, or the given subnet)
    → VM with each disk's set → verify the disks report them."""
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub, rg = request.subscription_id, request.resource_group
    check_name("resource_group", "resource_group", request.resource_group)
    luns = data_disk_luns(AzureClients(credentials, sub), request.image_version_id)
    if len(request.data_disk_encryption_set_ids) != len(luns):
        raise InvalidRequest(
            "data_disk_encryption_set_ids",
            request.data_disk_encryption_set_ids,
            f"one set per data disk of the image: it has LUNs {luns}",
        )
    data_sets = dict(zip(luns, request.data_disk_encryption_set_ids, strict=True))
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
