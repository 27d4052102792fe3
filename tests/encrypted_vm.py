"""An emulator VM whose OS disk is encrypted through a disk encryption set (set, vault and
key in `rg-img`, westeurope), made through the real SDK: what revocation tests act on."""

from __future__ import annotations

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.helpers import des_in_region, gallery_image, managed_image

GROUP = "rg-img"


def encrypted_vm(
    azure: AzureClients, emulator: Emulator, name: str = "vm1", des_name: str = "des-we"
) -> tuple[str, str]:
    """A running VM on a new set (vault `kv-<des_name>`, key `k`); returns (vm id, set id)."""
    des = des_in_region(azure, emulator, "westeurope", des_name, GROUP)
    compute = azure.compute()
    source = managed_image(azure, "westeurope", group=GROUP)
    gallery_image(azure, GROUP)
    version = compute.gallery_image_versions.begin_create_or_update(
        GROUP,
        "g1",
        "img",
        "1.0.0",
        {
            "location": "westeurope",
            "properties": {
                "publishingProfile": {
                    "targetRegions": [
                        {
                            "name": "westeurope",
                            "encryption": {"osDiskImage": {"diskEncryptionSetId": des}},
                        }
                    ]
                },
                "storageProfile": {"source": {"id": source}},
            },
        },
    ).result()
    vm = compute.virtual_machines.begin_create_or_update(
        GROUP,
        name,
        {
            "location": "westeurope",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                "storageProfile": {
                    "imageReference": {"id": version.id},
                    "osDisk": {
                        "createOption": "FromImage",
                        "managedDisk": {"diskEncryptionSet": {"id": des}},
                    },
                },
            },
        },
    ).result()
    return str(vm.id), des


def power_state(azure: AzureClients, name: str = "vm1") -> tuple[str, str]:
    """The VM's PowerState code and its status message."""
    vm = azure.compute().virtual_machines.get(GROUP, name, expand="instanceView")
    for status in vm.instance_view.statuses:
        if status.code.startswith("PowerState/"):
            return status.code, status.message or ""
    raise AssertionError("no PowerState in the instance view")
