"""Procedure A, step 6: a VM from the encrypted image version, its OS disk and each data
disk encrypted by a disk encryption set (`--os-disk-encryption-set`,
`--data-disk-encryption-sets`).

create-vm-from-encrypted-image: check the subscription and region, the image version (in
the region), one set per data disk, each set (subscription, region, key) → one run per VM →
(encryption at host: the EncryptionAtHost feature registered) → network (minimal, or the given
subnet) → VM with each disk's set → verify the disks → the run's summary. `plan_only`: what
each step would do, nothing written."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.aks_models import ENCRYPTION_AT_HOST, ENCRYPTION_AT_HOST_WAIT
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.vm_models import VmFromImageRequest, VmResult
from tasks.disk_encryption_set import check_disk_encryption_sets
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.registration import plan_required_feature, require_feature
from tasks.run_lock import resource_lock
from tasks.subscription import check_subscription_regions
from tasks.virtual_machine import (
    ensure_network,
    ensure_vm,
    plan_vm,
    validate_vm_request,
    verify_vm_disks,
)

__all__ = [  # the request and result, importable from the flow that takes them
    "VmFromImageRequest",
    "VmResult",
    "create_vm_from_encrypted_image",
]


@flow(name="create-vm-from-encrypted-image", validate_parameters=False)
@refuse_quietly
def create_vm_from_encrypted_image(
    request: VmFromImageRequest, credentials: AzureCredentials | None = None
) -> VmResult | Plan:
    """Check the subscription, region, image version, data disks and sets → one run per VM →
    network (minimal, or the given subnet) → VM with each disk's set → verify the disks.
    `plan_only`: the plan of those steps, nothing written.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(VmFromImageRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    check_subscription_regions(credentials, sub, {"location": request.location})
    data_sets = validate_vm_request(credentials, request, sub)
    check_disk_encryption_sets(credentials, sub, request.set_references(data_sets))
    field = "enable_encryption_at_host"
    if request.plan_only:
        if request.enable_encryption_at_host:
            plan_required_feature(credentials, sub, *ENCRYPTION_AT_HOST, field)
        plan_vm(credentials, sub, request)
        return publish_plan("create-vm-from-encrypted-image")
    with resource_lock(request.vm_id(sub), wait=request.wait_for_other_run):
        if request.enable_encryption_at_host:
            require_feature(credentials, sub, *ENCRYPTION_AT_HOST, field, *ENCRYPTION_AT_HOST_WAIT)
        nic = ensure_network(
            credentials, sub, rg, request.vm_name, request.location, request.subnet_id
        )
        ensure_vm(credentials, sub, request, nic, data_sets)
        result = verify_vm_disks(
            credentials,
            sub,
            rg,
            request.vm_name,
            request.os_disk_encryption_set_id,
            data_sets,
            request.enable_encryption_at_host,
        )
        summarize("create-vm-from-encrypted-image")
        return result
