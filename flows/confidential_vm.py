"""Confidential VMs with customer keys: prepare the key and its disk encryption set, and
rotate that key offline.

prepare-confidential-vm-encryption: validate → vault (purge protection) made Premium, or an
adopted activated managed HSM → exportable RSA-HSM key with the confidential-VM release policy
→ the Confidential VM Orchestrator installed and allowed to release the key (get and release
by access policy, Key Vault Crypto Service Release User on an RBAC vault's key, Managed HSM
Crypto Service Release User at the HSM key's scope) → a ConfidentialVmEncryptedWithCustomerKey
set → its identity granted key access → wait until the grant is effective → optionally a
confidential VM from a gallery image version, its OS disk on the set
(https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-azure-cli).
rotate-confidential-vm-key: plan (the set's VMs and power states, the window) → record the VMs
to start again on the set → deallocate them all → new key version (once per rotation) → the
set's key → verify → start the VMs that were running → clear the record
(https://learn.microsoft.com/azure/confidential-computing/key-rotation-offline)."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.confidential_vm_models import (
    CONFIDENTIAL_ENCRYPTION,
    VM_DEALLOCATE,
    VM_START,
    ConfidentialRotationRequest,
    ConfidentialRotationResult,
    ConfidentialVmEncryptionRequest,
    ConfidentialVmEncryptionResult,
    ConfidentialVmSpec,
    rotation_result,
)
from byok.disk_encryption_set_models import des_id
from byok.keyvault_ids import KeyId
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.permissions import DES_WRITE, ROLE_ASSIGNMENT_WRITE, VAULT_WRITE
from tasks.confidential_vm import (
    deallocate_vms,
    ensure_confidential_key,
    ensure_confidential_vm,
    ensure_orchestrator,
    ensure_premium_vault,
    finish_rotation,
    grant_key_release,
    grant_set_key_use,
    plan_confidential_encryption,
    plan_confidential_rotation,
    plan_rotation_steps,
    record_rotation,
    start_vms,
    validate_confidential_request,
)
from tasks.disk_encryption_set import (
    ensure_disk_encryption_set,
    update_des_key,
    verify_des_key,
    wait_for_key_access,
)
from tasks.events import emit_byok_event
from tasks.key_vault import (
    check_key_store,
    ensure_key_vault,
    new_key_version,
)
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.resource_group import ensure_resource_group
from tasks.run_lock import resource_lock
from tasks.subscription import check_permissions, check_subscription_regions
from tasks.virtual_machine import ensure_network

__all__ = [  # the requests and results, importable from the flows that take them
    "ConfidentialRotationRequest",
    "ConfidentialRotationResult",
    "ConfidentialVmEncryptionRequest",
    "ConfidentialVmEncryptionResult",
    "ConfidentialVmSpec",
    "prepare_confidential_vm_encryption",
    "rotate_confidential_vm_key",
]


@flow(name="prepare-confidential-vm-encryption", persist_result=True, validate_parameters=False)
@refuse_quietly
def prepare_confidential_vm_encryption(
    request: ConfidentialVmEncryptionRequest, credentials: AzureCredentials | None = None
) -> ConfidentialVmEncryptionResult | Plan:
    """Premium vault (or managed HSM) → exportable RSA-HSM key with the confidential-VM
    release policy → the Confidential VM Orchestrator allowed to release it → a
    confidential-VM disk encryption set whose identity may use the key → optionally a
    confidential VM on it.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(ConfidentialVmEncryptionRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id, request.resource_group
    timeout = request.propagation_timeout_minutes * 60
    check_subscription_regions(credentials, sub, {"location": request.location})
    target = validate_confidential_request(credentials, request)
    hsm = check_key_store(credentials, request)
    check_permissions(
        credentials,
        sub,
        rg,
        [
            *([] if hsm else [VAULT_WRITE]),
            DES_WRITE,
            *([ROLE_ASSIGNMENT_WRITE] if request.vault_rbac and not hsm else []),
        ],
        "prepare-confidential-vm-encryption",
    )
    if request.plan_only:
        plan_confidential_encryption(credentials, request, hsm)
        return publish_plan("prepare-confidential-vm-encryption")
    with resource_lock(target, wait=request.wait_for_other_run):
        ensure_resource_group(credentials, sub, rg, request.location)
        vault = hsm or ensure_key_vault(
            credentials,
            sub,
            rg,
            str(request.vault_name),
            request.location,
            request.vault_rbac,
            timeout,
        )
        ensure_premium_vault(credentials, sub, vault)
        key = ensure_confidential_key(
            credentials,
            sub,
            vault,
            request.key_name,
            request.key_size,
            request.attestation_authority,
            timeout,
        )
        orchestrator = ensure_orchestrator(credentials)
        grant_key_release(credentials, sub, vault, orchestrator, key.name, timeout)
        des = ensure_disk_encryption_set(
            credentials,
            sub,
            rg,
            request.des_name,
            request.location,
            vault,
            key,
            CONFIDENTIAL_ENCRYPTION,
            False,
        )
        grant_set_key_use(credentials, sub, vault, des.principal_id, timeout, key_name=key.name)
        des = wait_for_key_access(credentials, sub, rg, des, timeout)
        vm_id = None
        if request.vm is not None:
            nic = ensure_network(
                credentials, sub, rg, request.vm.vm_name, request.location, request.vm.subnet_id
            )
            vm_id = ensure_confidential_vm(
                credentials, sub, rg, request.location, request.vm, des.id, nic
            )
        emit_byok_event(
            "resource.encrypted",
            des.id,
            "disk-encryption-set",
            related={"key": key.id, "vault": vault.id},
        )
        summarize("prepare-confidential-vm-encryption")
        return ConfidentialVmEncryptionResult(
            disk_encryption_set=des,
            vault=vault,
            key=key,
            orchestrator_object_id=orchestrator,
            vm_id=vm_id,
        )


@flow(name="rotate-confidential-vm-key", validate_parameters=False)
@refuse_quietly
def rotate_confidential_vm_key(
    request: ConfidentialRotationRequest, credentials: AzureCredentials | None = None
) -> ConfidentialRotationResult | Plan:
    """Deallocate every VM on the set → new key version → the set's key → verify → start the
    VMs that were running. A re-run finishes a rotation a crash interrupted (the VMs to start
    again are recorded on the set before any stops); `plan_only`: what each step would do
    (the VMs it would stop and start among them), nothing written.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(ConfidentialRotationRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg, name = request.subscription_id, request.resource_group, request.des_name
    if request.plan_only:
        plan = plan_confidential_rotation(credentials, request)
        plan_rotation_steps(credentials, sub, plan)
        return publish_plan("rotate-confidential-vm-key")
    check_permissions(
        credentials, sub, rg, [DES_WRITE, VM_DEALLOCATE, VM_START], "rotate-confidential-vm-key"
    )
    target = des_id(sub or credentials.subscription_id, rg, name)
    with resource_lock(target, wait=request.wait_for_other_run):
        plan = plan_confidential_rotation(credentials, request)
        old_key = plan.des.key_url
        if not plan.rotated:
            record_rotation(credentials, sub, plan)
        stop_seconds = deallocate_vms(credentials, sub, plan.to_stop) if plan.to_stop else 0.0
        new_key = (
            old_key
            if plan.rotated
            else new_key_version(credentials, sub, old_key, plan.record.rotation_id)
        )
        if new_key != old_key:
            update_des_key(credentials, sub, rg, name, new_key)
        verify_des_key(
            credentials, sub, rg, name, new_key, request.timeout_minutes * 60, request.poll_seconds
        )
        start_seconds = start_vms(credentials, sub, plan.to_start)
        measured = stop_seconds + start_seconds if plan.to_stop and plan.to_start else None
        finish_rotation(credentials, sub, plan, measured)
        if plan.pending:
            key = KeyId.parse(new_key)
            emit_byok_event(
                "key.rotated",
                key.versionless,
                "key",
                related={"disk-encryption-set": plan.des.id},
                payload={"new_version": key.version},
            )
        summarize("rotate-confidential-vm-key")
        return rotation_result(plan, new_key=new_key, measured=measured)
