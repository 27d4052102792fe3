"""VM steps of procedure A, step 6: validate a VM from an encrypted image version, its
network (get or create), the VM (get or create), and the set each disk reports."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute.models import GalleryImageVersion
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id, resource_id
from prefect import task

from blocks.azure import AzureCredentials
from byok.azure_errors import or_none
from byok.errors import VerificationFailed
from byok.validation import InvalidRequest, check_name, region_key
from byok.vm_models import VmFromImageRequest, VmResult, minimal_network, nic_body
from clients.azure import AzureClients
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


def _parts(rid: str) -> dict[str, str]:
    """The parts of a resource id ({} when it is not one)."""
    if not is_valid_resource_id(rid):
        return {}
    return {k: str(v) for k, v in parse_resource_id(rid).items()}


def read_image_version(clients: AzureClients, image_version_id: str) -> GalleryImageVersion:
    """The gallery image version named by the request, or InvalidRequest."""
    p = _parts(image_version_id)
    try:
        return clients.compute().gallery_image_versions.get(
            p["resource_group"], p["name"], p["child_name_1"], p["child_name_2"]
        )
    except (ResourceNotFoundError, KeyError):
        raise InvalidRequest(
            "image_version_id", image_version_id, "no such image version"
        ) from None


def data_disk_luns(clients: AzureClients, version: GalleryImageVersion) -> list[int]:
    """The image's data-disk LUNs, in order."""
    disks = version.properties.storage_profile.data_disk_images or []
    if disks:
        return sorted(int(d.lun) for d in disks)
    source = version.properties.storage_profile.source
    s = _parts(str(source.id)) if source and source.id else {}
    if s.get("type", "").lower() == "images" and "child_type_1" not in s:
        image = clients.compute().images.get(s["resource_group"], s["name"])
        return sorted(int(d.lun) for d in image.properties.storage_profile.data_disks or [])
    return []


@task(name="Validate request", **STEP_RETRIES)
def validate_vm_request(
    credentials: AzureCredentials, request: VmFromImageRequest, subscription: str
) -> dict[int, str]:
    """Before any write: the version exists and is replicated to the VM's region, one set per
    data disk, the subnet exists. (The sets themselves: `check_disk_encryption_sets`.)
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
    if request.subnet_id:
        subnet = _parts(request.subnet_id)
        if not subnet:
            raise InvalidRequest("subnet_id", request.subnet_id, "not a subnet id")
        try:
            names = (subnet["resource_group"], subnet["name"], subnet["child_name_1"])
            AzureClients.of(credentials, subnet["subscription"]).network().subnets.get(*names)
        except (ResourceNotFoundError, KeyError):
            raise InvalidRequest("subnet_id", request.subnet_id, "no such subnet") from None
    return dict(zip(luns, request.data_disk_encryption_set_ids, strict=True))


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
        vnet = or_none(lambda: network.virtual_networks.get(rg, f"{vm_name}-vnet"))
        if vnet is None:
            vnet = network.virtual_networks.begin_create_or_update(
                rg, f"{vm_name}-vnet", minimal_network(location)
            ).result()
            report(str(vnet.id), "create")
        else:
            report(str(vnet.id), None)
        subnet_id = str((vnet.properties.subnets or [])[0].id)
    nic = or_none(lambda: network.network_interfaces.get(rg, f"{vm_name}-nic"))
    if nic is not None:
        report(str(nic.id), None)
        return str(nic.id)
    nic = network.network_interfaces.begin_create_or_update(
        rg, f"{vm_name}-nic", nic_body(location, subnet_id)
    ).result()
    report(str(nic.id), "create")
    return str(nic.id)


@task(name="Create the VM with encrypted disks", **STEP_RETRIES)
def ensure_vm(
    credentials: AzureCredentials,
    subscription_id: str,
    request: VmFromImageRequest,
    nic_id: str,
    data_sets: dict[int, str],
) -> None:
    """Create the VM (get or create), each disk encrypted by its set."""
    vms = AzureClients.of(credentials, subscription_id).compute().virtual_machines
    rg, name = request.resource_group, request.vm_name
    vm = or_none(lambda: vms.get(rg, name))
    made = vm is None
    if vm is None:
        vm = vms.begin_create_or_update(rg, name, request.to_sdk(nic_id, data_sets)).result()
    report(str(vm.id), "create" if made else None)


@task(name="Verify the VM's disk encryption", **STEP_RETRIES)
def verify_vm_disks(
    credentials: AzureCredentials,
    subscription_id: str | None,
    rg: str,
    name: str,
    os_set: str,
    data_sets: dict[int, str],
    encryption_at_host: bool = False,
) -> VmResult:
    """Each managed disk of the VM reports the requested set (and the VM encryption at host,
    when asked for)."""
    clients = AzureClients.of(credentials, subscription_id)
    vm = clients.compute().virtual_machines.get(rg, name)
    storage = vm.properties.storage_profile

    def disk_set(disk_id: str | None) -> str | None:
        p = _parts(str(disk_id))
        disk = clients.compute().disks.get(p["resource_group"], p["name"])
        return disk.properties.encryption.disk_encryption_set_id

    result = VmResult(
        id=str(vm.id),
        os_disk_encryption_set_id=disk_set(storage.os_disk.managed_disk.id),
        data_disk_encryption_set_ids={
            int(d.lun): disk_set(d.managed_disk.id) for d in storage.data_disks or []
        },
        encryption_at_host=bool(
            vm.properties.security_profile and vm.properties.security_profile.encryption_at_host
        ),
    )
    if encryption_at_host and not result.encryption_at_host:
        raise VerificationFailed(str(vm.id), "it reports no encryption at host")
    wanted = {"os": os_set.lower(), "data": {k: v.lower() for k, v in data_sets.items()}}
    actual = {
        "os": (result.os_disk_encryption_set_id or "").lower(),
        "data": {k: (v or "").lower() for k, v in result.data_disk_encryption_set_ids.items()},
    }
    if actual != wanted:
        raise VerificationFailed(str(vm.id), f"its disks report {actual}, requested {wanted}")
    report(str(vm.id), "verify", note=f"{1 + len(data_sets)} disk(s) on their sets")
    return result


@task(name="Plan the VM", **STEP_RETRIES)
def plan_vm(
    credentials: AzureCredentials, subscription_id: str, request: VmFromImageRequest
) -> None:
    """What each step of create-vm-from-encrypted-image after the feature would do, from
    reads only."""
    clients = AzureClients.of(credentials, subscription_id)
    network, rg, name = clients.network(), request.resource_group, request.vm_name
    group = resource_id(subscription=subscription_id, resource_group=rg)
    step = "Create network resources"
    if request.subnet_id is None:
        vnet = or_none(lambda: network.virtual_networks.get(rg, f"{name}-vnet"))
        where = f"{group}/providers/Microsoft.Network/virtualNetworks/{name}-vnet"
        report(where, None if vnet else "create", step=step, planned=True)
    nic = or_none(lambda: network.network_interfaces.get(rg, f"{name}-nic"))
    where = f"{group}/providers/Microsoft.Network/networkInterfaces/{name}-nic"
    report(where, None if nic else "create", step=step, planned=True)
    vm = or_none(lambda: clients.compute().virtual_machines.get(rg, name))
    step = "Create the VM with encrypted disks"
    report(request.vm_id(subscription_id), None if vm else "create", step=step, planned=True)
    step = "Verify the VM's disk encryption"
    report(request.vm_id(subscription_id), "verify", step=step, planned=True)
