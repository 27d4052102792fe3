"""Procedure C, steps 1-4 (and A's prerequisite): a disk encryption set whose key lives in a
purge-protected vault or an activated managed HSM, usable by its identity. Plus rotating its
key.

prepare-disk-encryption-set: validate → vault with purge protection (or the adopted managed
HSM) → RSA key (and its rotation policy) → disk encryption set with the versioned key URL →
grant its identity key access (and Reader; on an HSM its local role at key scope) → wait
until the grant is effective.
rotate-disk-encryption-set-key: new key version (once per rotation) → the set's active key →
verify."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.disk_encryption_set_models import (
    DesKeyRotationRequest,
    DiskEncryptionSetInfo,
    DiskEncryptionSetRequest,
    DiskEncryptionSetResult,
    des_id,
)
from byok.keyvault_ids import KeyId
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.permissions import DES_WRITE, ROLE_ASSIGNMENT_WRITE, VAULT_WRITE
from tasks.disk_encryption_set import (
    ensure_disk_encryption_set,
    plan_des_key_rotation,
    plan_disk_encryption_set,
    require_des,
    update_des_key,
    validate_request,
    verify_des_key,
    wait_for_key_access,
)
from tasks.events import emit_byok_event
from tasks.key_vault import (
    check_key_store,
    ensure_key,
    ensure_key_vault,
    ensure_rotation_policy,
    grant_key_use,
    new_key_version,
)
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.resource_group import ensure_resource_group
from tasks.run_lock import resource_lock
from tasks.subscription import check_permissions, check_subscription_regions

__all__ = [  # the requests and results, importable from the flows that take them
    "DesKeyRotationRequest",
    "DiskEncryptionSetInfo",
    "DiskEncryptionSetRequest",
    "DiskEncryptionSetResult",
    "prepare_disk_encryption_set",
    "rotate_disk_encryption_set_key",
]


@flow(name="prepare-disk-encryption-set", persist_result=True, validate_parameters=False)
@refuse_quietly
def prepare_disk_encryption_set(
    request: DiskEncryptionSetRequest, credentials: AzureCredentials | None = None
) -> DiskEncryptionSetResult | Plan:
    """Vault with purge protection → RSA key → disk encryption set with the versioned key URL
    → grant its identity key access (and Reader) → wait until the grant is effective.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(DiskEncryptionSetRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id, request.resource_group
    timeout = request.propagation_timeout_minutes * 60
    check_subscription_regions(credentials, sub, {"location": request.location})
    target = validate_request(credentials, request)
    hsm = check_key_store(credentials, request)
    check_permissions(
        credentials,
        sub,
        rg,
        [
            *([] if hsm else [VAULT_WRITE]),
            DES_WRITE,
            *([ROLE_ASSIGNMENT_WRITE] if request.assigns_roles else []),
        ],
        "prepare-disk-encryption-set",
    )
    if request.plan_only:
        plan_disk_encryption_set(credentials, request, hsm)
        return publish_plan("prepare-disk-encryption-set")
    with resource_lock(target, wait=request.wait_for_other_run):
        ensure_resource_group(credentials, sub, rg, request.location)
        vault = hsm or ensure_key_vault(
            credentials, sub, rg, request.vault, request.location, request.vault_rbac, timeout
        )
        key = ensure_key(credentials, sub, vault, request.key_name, request.key_size, timeout)
        if request.rotation_policy is not None:
            ensure_rotation_policy(credentials, sub, key.versionless_id, request.rotation_policy)
        des = ensure_disk_encryption_set(
            credentials,
            sub,
            rg,
            request.des_name,
            request.location,
            vault,
            key,
            request.encryption_type,
            request.auto_key_rotation,
        )
        grant_key_use.with_options(name="Grant the set's identity access to the key")(
            credentials,
            sub,
            vault,
            des.principal_id,
            timeout,
            request.reader_on(vault),
            key_name=key.name,
        )
        des = wait_for_key_access(credentials, sub, rg, des, timeout)
        emit_byok_event(
            "resource.encrypted",
            des.id,
            "disk-encryption-set",
            related={"key": key.id, "vault": vault.id},
        )
        summarize("prepare-disk-encryption-set")
        return DiskEncryptionSetResult(disk_encryption_set=des, vault=vault, key=key)


@flow(name="rotate-disk-encryption-set-key", validate_parameters=False)
@refuse_quietly
def rotate_disk_encryption_set_key(
    request: DesKeyRotationRequest, credentials: AzureCredentials | None = None
) -> DiskEncryptionSetInfo | Plan:
    """New key version → update the set's active key (or, with automatic rotation, wait for
    the set to pick it up) → verify activeKey, lastKeyRotationTimestamp, previousKeys empty,
    no autoKeyRotationError.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(DesKeyRotationRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg, name = request.subscription_id, request.resource_group, request.des_name
    target = des_id(sub or credentials.subscription_id, rg, name)
    with resource_lock(target, wait=request.wait_for_other_run):
        des = require_des(credentials, sub, rg, name)
        if request.plan_only:
            plan_des_key_rotation(credentials, request, des)
            return publish_plan("rotate-disk-encryption-set-key")
        new_key = new_key_version(credentials, sub, des.key_url, request.rotation_id)
        if not des.rotation_to_latest_key_version:
            update_des_key(credentials, sub, rg, name, new_key, in_use=des.key_url)
        verified = verify_des_key(
            credentials,
            sub,
            rg,
            name,
            new_key,
            request.timeout_minutes * 60,
            request.poll_seconds,
        )
        key = KeyId.parse(new_key)
        emit_byok_event(
            "key.rotated",
            key.versionless,
            "key",
            related={"disk-encryption-set": verified.id},
            payload={"new_version": key.version},
        )
        summarize("rotate-disk-encryption-set-key")
        return verified
