"""`az vm create --image <gallery image version id>` with the real Azure CLI: the CLI reads
the version's `storageProfile` (a version made from a managed image shows that image's disks
as `osDiskImage`/`dataDiskImages`) and deploys the VM and its network interface with a
template deployment, preflighted as ARM does."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from emulator.server import Emulator
from tests.cli.azcli import Az, logged_in, needs_az

pytestmark = [needs_az, pytest.mark.slow]
GROUP = "rg-vm-cli"


@pytest.fixture(scope="module")
def az(emulator_session: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Az:
    """The CLI logged in to a fresh emulator state."""
    emulator_session.reset()
    return logged_in(emulator_session, tmp_path_factory.mktemp("azure-cli-vm"))


def ssh_public_key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_vm_from_an_image_version_made_from_a_managed_image(
    az: Az, emulator_session: Emulator
) -> None:
    group = f"/subscriptions/{emulator_session.identity.subscription_id}/resourceGroups/{GROUP}"
    az("group", "create", "-n", GROUP, "-l", "westeurope")
    image = az("resource", "create", "--id", f"{group}/providers/Microsoft.Compute/images/src",
               "--api-version", "2024-07-01", "-l", "westeurope", "--properties",
               '{"storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",'
               ' "diskSizeGB": 30}, "dataDisks": [{"lun": 0, "diskSizeGB": 8}]}}')  # fmt: skip
    az("sig", "create", "-g", GROUP, "-r", "gal")
    az("sig", "image-definition", "create", "-g", GROUP, "-r", "gal", "-i", "img",
       "--publisher", "byok", "--offer", "demo", "--sku", "1", "--os-type", "Linux")  # fmt: skip
    # --no-wait: the CLI polls a version every 30 s; it is replicated long before `show`
    az("sig", "image-version", "create", "-g", GROUP, "-r", "gal", "-i", "img", "-e", "1.0.0",
       "--managed-image", image["id"], "--no-wait")  # fmt: skip
    version = az("sig", "image-version", "show", "-g", GROUP, "-r", "gal", "-i", "img",
                 "-e", "1.0.0")  # fmt: skip
    assert version["storageProfile"]["osDiskImage"]["sizeInGB"] == 30
    assert [d["lun"] for d in version["storageProfile"]["dataDiskImages"]] == [0]
    emulator_session.requests.clear()

    created = az("vm", "create", "-g", GROUP, "-n", "vm-cli", "--image", version["id"],
                 "--admin-username", "byok", "--ssh-key-values", ssh_public_key(),
                 "--public-ip-address", "", "--nsg", "")  # fmt: skip

    assert created["powerState"] == "VM running"
    (deployed,) = emulator_session.requests.find(method="PUT", path="/deployments/vm_deploy_")
    assert deployed.status == 201
    vm = az("vm", "show", "-g", GROUP, "-n", "vm-cli")
    storage = vm["storageProfile"]
    assert storage["imageReference"]["id"] == version["id"]
    assert [d["lun"] for d in storage["dataDisks"]] == [0]
    disks = {d["name"]: d for d in az("disk", "list", "-g", GROUP)}
    os_disk = storage["osDisk"]["managedDisk"]["id"]
    assert os_disk.startswith(f"{group}/providers/Microsoft.Compute/disks/vm-cli_OsDisk_1_")
    assert disks[os_disk.rsplit("/", 1)[1]]["managedBy"] == vm["id"]
    assert disks[storage["dataDisks"][0]["name"]]["managedBy"] == vm["id"]
    nic = az("network", "nic", "show", "--ids", vm["networkProfile"]["networkInterfaces"][0]["id"])
    assert nic["name"] == "vm-cliVMNic"
    # the CLI's default network needs types the emulator does not serve: ARM's preflight
    # refuses the whole deployment before it writes anything
    refused = az.run("vm", "create", "-g", GROUP, "-n", "vm-two", "--image", version["id"],
                     "--admin-username", "byok", "--ssh-key-values", ssh_public_key())  # fmt: skip
    assert refused.returncode != 0 and "InvalidTemplateDeployment" in refused.stderr
    assert not [r for r in emulator_session.arm.resources.values() if "vm-two" in r["id"]]
