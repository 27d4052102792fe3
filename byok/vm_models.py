"""A VM from an encrypted gallery image version (no Prefect import): the request, the result,
and the request bodies of its network and the VM as azure-mgmt models."""

from __future__ import annotations

from azure.mgmt.compute import models as compute
from azure.mgmt.core.tools import resource_id
from azure.mgmt.network import models as network
from pydantic import BaseModel, Field

from byok.outcomes import PLAN_ONLY
from byok.parameters import AZURE_BLOCK_NAME


class VmFromImageRequest(BaseModel):
    """The VM, its image version, its disks' sets and its network."""

    azure_credentials_block: str | None = Field(None, description=AZURE_BLOCK_NAME)
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
    enable_encryption_at_host: bool = Field(
        False,
        description="Encryption at host: the VM's temp disk and disk caches encrypted too "
        "(registers the subscription's Microsoft.Compute/EncryptionAtHost feature; Azure "
        "Policy fc4d8e41-e223-45ea-9bf5-eada37891d87).",
    )
    wait_for_other_run: bool = Field(
        False,
        description="When another run is creating this VM: wait for it (default: fail at once).",
    )
    plan_only: bool = PLAN_ONLY

    def vm_id(self, subscription: str) -> str:
        """The VM's resource id."""
        return resource_id(
            subscription=subscription,
            resource_group=self.resource_group,
            namespace="Microsoft.Compute",
            type="virtualMachines",
            name=self.vm_name,
        )

    def set_references(self, data_sets: dict[int, str]) -> dict[str, tuple[str, str]]:
        """Each set the VM's disks use: request field → (set id, the VM's region)."""
        sets = {"os_disk_encryption_set_id": self.os_disk_encryption_set_id}
        sets |= {f"data_disk_encryption_set_ids[{i}]": s for i, s in enumerate(data_sets.values())}
        return {field: (set_id, self.location) for field, set_id in sets.items()}

    def to_sdk(self, nic_id: str, data_sets: dict[int, str]) -> compute.VirtualMachine:
        """The VM, each disk encrypted by its set (`--os-disk-encryption-set`,
        `--data-disk-encryption-sets`)."""

        def managed(set_id: str) -> compute.ManagedDiskParameters:
            return compute.ManagedDiskParameters(
                storage_account_type="Premium_LRS",
                disk_encryption_set=compute.DiskEncryptionSetParameters(id=set_id),
            )

        return compute.VirtualMachine(
            location=self.location,
            properties=compute.VirtualMachineProperties(
                hardware_profile=compute.HardwareProfile(vm_size=self.vm_size),
                storage_profile=compute.StorageProfile(
                    image_reference=compute.ImageReference(id=self.image_version_id),
                    os_disk=compute.OSDisk(
                        create_option="FromImage",
                        managed_disk=managed(self.os_disk_encryption_set_id),
                    ),
                    data_disks=[
                        compute.DataDisk(
                            lun=lun, create_option="FromImage", managed_disk=managed(set_id)
                        )
                        for lun, set_id in data_sets.items()
                    ],
                ),
                os_profile=linux_os_profile(self.vm_name, self.admin_username, self.ssh_public_key),
                network_profile=compute.NetworkProfile(
                    network_interfaces=[compute.NetworkInterfaceReference(id=nic_id)]
                ),
                security_profile=compute.SecurityProfile(encryption_at_host=True)
                if self.enable_encryption_at_host
                else None,
            ),
        )


class VmResult(BaseModel):
    """The VM and the set each of its disks reports."""

    id: str
    os_disk_encryption_set_id: str | None
    data_disk_encryption_set_ids: dict[int, str | None]
    encryption_at_host: bool = False


def minimal_network(location: str) -> network.VirtualNetwork:
    """A virtual network of one subnet, `default`, for a VM of its own."""
    return network.VirtualNetwork(
        location=location,
        properties=network.VirtualNetworkPropertiesFormat(
            address_space=network.AddressSpace(address_prefixes=["10.0.0.0/16"]),
            subnets=[
                network.Subnet(
                    name="default",
                    properties=network.SubnetPropertiesFormat(address_prefix="10.0.0.0/24"),
                )
            ],
        ),
    )


def nic_body(location: str, subnet_id: str) -> network.NetworkInterface:
    """A network interface in the subnet, with a dynamic private address."""
    return network.NetworkInterface(
        location=location,
        properties=network.NetworkInterfacePropertiesFormat(
            ip_configurations=[
                network.NetworkInterfaceIPConfiguration(
                    name="ipconfig1",
                    properties=network.NetworkInterfaceIPConfigurationPropertiesFormat(
                        subnet=network.Subnet(id=subnet_id),
                        private_ip_allocation_method="Dynamic",
                    ),
                )
            ]
        ),
    )


def linux_os_profile(name: str, admin_username: str, ssh_public_key: str) -> compute.OSProfile:
    """A Linux VM's OS profile: SSH key sign-in of the administrator only."""
    key = compute.SshPublicKey(
        path=f"/home/{admin_username}/.ssh/authorized_keys", key_data=ssh_public_key
    )
    return compute.OSProfile(
        computer_name=name,
        admin_username=admin_username,
        linux_configuration=compute.LinuxConfiguration(
            disable_password_authentication=True,
            ssh=compute.SshConfiguration(public_keys=[key]),
        ),
    )
