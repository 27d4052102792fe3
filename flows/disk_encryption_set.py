"""Procedure C, steps 1-4 (and A's prerequisite): a disk encryption set whose key lives in a
purge-protected vault, usable by its identity. Plus rotating its key."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from blocks.azure import AzureCredentials
from byok.key_policy import KeyRotationPolicyField
from byok.keyvault_ids import KeyId
from byok.parameters import parse_request
from byok.permissions import DES_WRITE, ROLE_ASSIGNMENT_WRITE, VAULT_WRITE
from byok.validation import check_name, check_rsa_key_size, same_region
from clients.azure import AzureClients
from tasks.disk_encryption_set import (
    DiskEncryptionSetInfo,
    check_existing_des,
    des_id,
    ensure_disk_encryption_set,
    read_des,
    require_des,
    update_des_key,
    verify_des_key,
    wait_for_key_access,
)
from tasks.events import emit_byok_event
from tasks.key_vault import (
    CRYPTO_SERVICE_ENCRYPTION_USER,
    READER,
    SERVICE_KEY_PERMISSIONS,
    KeyInfo,
    VaultInfo,
    assign_role,
    check_vault_and_key,
    ensure_key,
    ensure_key_vault,
    ensure_rotation_policy,
    grant,
    new_key_version,
)
from tasks.refusal import refuse_quietly
from tasks.resource_group import ensure_resource_group
from tasks.retry import STEP_RETRIES
from tasks.run_lock import resource_lock
from tasks.subscription import check_permissions, check_subscription_regions

_WAIT = Field(
    False,
    description="When another run is working on the same disk encryption set: wait for it "
    "to finish (true), or fail at once with 'another run is working on <set id>' (false).",
)

EncryptionType = Literal[
    "EncryptionAtRestWithCustomerKey", "EncryptionAtRestWithPlatformAndCustomerKeys"
]


class DiskEncryptionSetRequest(BaseModel):
    """Where the set, its vault and its key go, and how the key is used."""

    azure_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK Azure Credentials' block to use."
    )
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group (created if missing).")
    location: str = Field(..., description="Region of the set, its vault and the disks.")
    vault_name: str = Field(
        ...,
        description="Key vault (created with purge protection if missing; an existing "
        "one must have soft delete and purge protection on).",
    )
    vault_rbac: bool = Field(
        True,
        description="A new vault uses Azure RBAC (else access policies); an existing "
        "vault keeps its own model.",
    )
    key_name: str = Field(..., description="RSA key (created if missing, reused if present).")
    key_size: Literal[2048, 3072, 4096] = Field(3072, description="RSA key size in bits.")
    des_name: str = Field(..., description="Disk encryption set name.")
    encryption_type: EncryptionType = Field(
        "EncryptionAtRestWithCustomerKey",
        description="Customer key, or double encryption with platform and customer keys "
        "(fixed at creation).",
    )
    rotation_policy: KeyRotationPolicyField = None
    auto_key_rotation: bool = Field(
        False,
        description="Follow new key versions automatically (Azure: within an hour).",
    )
    grant_reader_role: bool | None = Field(
        None,
        description="Also give the set's identity Reader on the vault, as the AKS doc "
        "asks. Default: yes for access-policy vaults, no for RBAC vaults.",
    )
    propagation_timeout_minutes: float = Field(
        15,
        gt=0,
        description="How long to wait for new identities and grants to propagate.",
    )
    wait_for_other_run: bool = _WAIT


class DiskEncryptionSetResult(BaseModel):
    """What was prepared; the gallery and AKS flows take it as input."""

    disk_encryption_set: DiskEncryptionSetInfo
    vault: VaultInfo
    key: KeyInfo


@task(name="Validate request")
def validate_request(credentials: AzureCredentials, request: DiskEncryptionSetRequest) -> str:
    """Check names and what already exists (read-only), so that a bad request fails before
    anything is written. Returns the set's resource id."""
    check_name("resource_group", "resource_group", request.resource_group)
    check_name("key_vault", "vault_name", request.vault_name)
    check_name("key", "key_name", request.key_name)
    check_name("disk_encryption_set", "des_name", request.des_name)
    check_rsa_key_size("key_size", request.key_size)
    clients = AzureClients.of(credentials, request.subscription_id)
    check_vault_and_key(
        clients, request.resource_group, request.vault_name, request.key_name, request.location
    )
    des = read_des(clients, request.resource_group, request.des_name)
    if des is not None:
        same_region(
            "location", request.location, str(des.location), f"disk encryption set '{des.name}'"
        )
        check_existing_des(des, request.encryption_type)
    return des_id(clients.subscription_id, request.resource_group, request.des_name)


@task(name="Grant the set's identity access to the key", **STEP_RETRIES)
def grant_des_access(
    credentials: AzureCredentials,
    subscription_id: str | None,
    vault: VaultInfo,
    des: DiskEncryptionSetInfo,
    reader: bool,
    timeout_seconds: float,
) -> None:
    """get, wrapKey, unwrapKey (access policy, or Key Vault Crypto Service Encryption User on
    RBAC vaults), and optionally Reader on the vault."""
    clients = AzureClients.of(credentials, subscription_id)
    grant(
        clients,
        vault,
        des.principal_id,
        SERVICE_KEY_PERMISSIONS,
        CRYPTO_SERVICE_ENCRYPTION_USER,
        timeout_seconds,
    )
    if reader:
        assign_role(clients, vault.id, des.principal_id, READER, timeout_seconds)
    get_run_logger().info(
        "Granted %s key access on %s%s",
        des.principal_id,
        vault.name,
        " and Reader" if reader else "",
    )


@flow(name="prepare-disk-encryption-set", persist_result=True, validate_parameters=False)
@refuse_quietly
def prepare_disk_encryption_set(request: DiskEncryptionSetRequest) -> DiskEncryptionSetResult:
    """Vault with purge protection → RSA key → disk encryption set with the versioned key URL
    → grant its identity key access (and Reader) → wait until the grant is effective."""
    request = parse_request(DiskEncryptionSetRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    timeout = request.propagation_timeout_minutes * 60
    check_subscription_regions(credentials, request.subscription_id, {"location": request.location})
    target = validate_request(credentials, request)
    grants = request.vault_rbac or request.grant_reader_role is not False
    check_permissions(
        credentials,
        request.subscription_id,
        request.resource_group,
        [VAULT_WRITE, DES_WRITE, *([ROLE_ASSIGNMENT_WRITE] if grants else [])],
        "prepare-disk-encryption-set",
    )
    with resource_lock(target, wait=request.wait_for_other_run):
        return _prepare(credentials, request, timeout)


def _prepare(
    credentials: AzureCredentials, request: DiskEncryptionSetRequest, timeout: float
) -> DiskEncryptionSetResult:
    sub, rg = request.subscription_id, request.resource_group
    ensure_resource_group(credentials, sub, rg, request.location)
    vault = ensure_key_vault(
        credentials, sub, rg, request.vault_name, request.location, request.vault_rbac, timeout
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
    reader = (not vault.rbac) if request.grant_reader_role is None else request.grant_reader_role
    grant_des_access(credentials, sub, vault, des, reader, timeout)
    des = wait_for_key_access(credentials, sub, rg, des, timeout)
    emit_byok_event(
        "resource.encrypted",
        des.id,
        "disk-encryption-set",
        related={"key": key.id, "vault": vault.id},
    )
    return DiskEncryptionSetResult(disk_encryption_set=des, vault=vault, key=key)


class DesKeyRotationRequest(BaseModel):
    """Which set's key to rotate."""

    azure_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK Azure Credentials' block to use."
    )
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the set.")
    des_name: str = Field(..., description="Disk encryption set whose key to rotate.")
    timeout_minutes: float = Field(
        90,
        gt=0,
        description="How long to wait for the set to report the new version "
        "(automatic rotation takes up to an hour in Azure).",
    )
    poll_seconds: float = Field(30, gt=0, description="Seconds between checks.")
    rotation_id: str | None = Field(
        None,
        description="Names this rotation: a re-run with the same value reuses the key version "
        "it made (tagged byok-rotation=<value>) instead of making another. Empty: this flow "
        "run's id; a version newer than the set's is reused in any case.",
    )
    wait_for_other_run: bool = _WAIT


@flow(name="rotate-disk-encryption-set-key", validate_parameters=False)
@refuse_quietly
def rotate_disk_encryption_set_key(request: DesKeyRotationRequest) -> DiskEncryptionSetInfo:
    """New key version → update the set's active key (or, with automatic rotation, wait for
    the set to pick it up) → verify activeKey, lastKeyRotationTimestamp, previousKeys empty,
    no autoKeyRotationError."""
    request = parse_request(DesKeyRotationRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub, rg = request.subscription_id, request.resource_group
    target = des_id(sub or credentials.subscription_id, rg, request.des_name)
    with resource_lock(target, wait=request.wait_for_other_run):
        return _rotate(credentials, request)


def _rotate(credentials: AzureCredentials, request: DesKeyRotationRequest) -> DiskEncryptionSetInfo:
    sub, rg = request.subscription_id, request.resource_group
    des = require_des(credentials, sub, rg, request.des_name)
    new_key = new_key_version(credentials, sub, des.key_url, request.rotation_id)
    if not des.rotation_to_latest_key_version:
        update_des_key(credentials, sub, rg, request.des_name, new_key)
    verified = verify_des_key(
        credentials,
        sub,
        rg,
        request.des_name,
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
    return verified
