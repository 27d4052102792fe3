# mypy: disable-error-code="union-attr"
# (the SDK types every field Optional; a set Azure returns has them: see pyproject.toml)
"""Disk encryption set requests, results and rules (no Prefect import): what the set, its
vault and key are, the set as later steps need it, its request body, and the checks of an
existing set."""

from __future__ import annotations

from typing import Literal

from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    EncryptionSetIdentity,
    EncryptionSetProperties,
    KeyForDiskEncryptionSet,
    SourceVault,
    UserAssignedIdentitiesValue,
)
from azure.mgmt.core.tools import resource_id
from pydantic import BaseModel, Field, model_validator

from byok.errors import InvalidRequest, OperationFailed
from byok.key_policy import KeyRotationPolicyField
from byok.key_sources import StoreKind
from byok.key_store import HsmInfo, KeyInfo, KeyStore
from byok.outcomes import PLAN_ONLY
from byok.parameters import AZURE_BLOCK_NAME
from byok.sdk_values import text

_BLOCK = Field(None, description=AZURE_BLOCK_NAME)
_WAIT = Field(
    False,
    description="When another run is working on the same disk encryption set: wait for it "
    "to finish (true), or fail at once with `another run is working on <set id>` (false).",
)

EncryptionType = Literal[
    "EncryptionAtRestWithCustomerKey", "EncryptionAtRestWithPlatformAndCustomerKeys"
]


class DiskEncryptionSetInfo(BaseModel):
    """A disk encryption set as later steps and flows need it."""

    id: str
    name: str
    location: str
    key_url: str
    principal_id: str
    encryption_type: str
    rotation_to_latest_key_version: bool


class DiskEncryptionSetRequest(BaseModel):
    """Where the set, its vault and its key go, and how the key is used."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group (created if missing).")
    location: str = Field(..., description="Region of the set, its vault and the disks.")
    key_store: StoreKind = Field(
        "key-vault",
        description="Where the key lives: a key vault (`vault_name`) or a managed HSM "
        "(`hsm_name`).",
    )
    vault_name: str | None = Field(
        None,
        description="Key vault (created with purge protection if missing; an existing "
        "one must have soft delete and purge protection on). Required with key_store "
        "key-vault.",
    )
    hsm_name: str | None = Field(
        None,
        description="Managed HSM holding the key, with key_store managed-hsm: an existing, "
        "activated HSM in `location`, which this tool adopts and never creates (creating one "
        "takes a security domain ceremony by your officers). This tool's principal needs its "
        "local roles Managed HSM Crypto User and Crypto Officer, granted by its administrators.",
    )
    hsm_resource_group: str | None = Field(
        None, description="Resource group of the managed HSM. Default: `resource_group`."
    )
    vault_rbac: bool = Field(
        True,
        description="A new vault uses Azure RBAC (else access policies); an existing "
        "vault keeps its own model.",
    )
    key_name: str = Field(
        ...,
        description="RSA key (created if missing, reused if present; RSA-HSM in a managed HSM).",
    )
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
    plan_only: bool = PLAN_ONLY

    @model_validator(mode="after")
    def _store_named(self) -> DiskEncryptionSetRequest:
        hsm = self.key_store == "managed-hsm"
        field, value = ("hsm_name", self.hsm_name) if hsm else ("vault_name", self.vault_name)
        if not value:
            raise InvalidRequest(field, value, f"required with key_store {self.key_store}")
        return self

    def reader_on(self, store: KeyStore) -> bool:
        """Whether the set's identity also gets Reader on the vault (never on an HSM: its
        grants are local roles)."""
        if isinstance(store, HsmInfo):
            return False
        return (not store.rbac) if self.grant_reader_role is None else self.grant_reader_role

    @property
    def assigns_roles(self) -> bool:
        """Whether the run may assign Azure roles (an RBAC vault, or Reader on the vault); an
        HSM's grants are its local roles."""
        if self.key_store == "managed-hsm":
            return False
        return self.vault_rbac or self.grant_reader_role is not False

    @property
    def vault(self) -> str:
        """The key vault's name (key_store key-vault)."""
        return str(self.vault_name)

    @property
    def hsm_group(self) -> str:
        """The managed HSM's resource group."""
        return self.hsm_resource_group or self.resource_group


class DiskEncryptionSetResult(BaseModel):
    """What was prepared; the gallery and AKS flows take it as input."""

    disk_encryption_set: DiskEncryptionSetInfo
    vault: KeyStore
    key: KeyInfo


class DesKeyRotationRequest(BaseModel):
    """Which set's key to rotate."""

    azure_credentials_block: str | None = _BLOCK
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
        "it made (tagged `byok-rotation=<value>`) instead of making another. Empty: this flow "
        "run's id; a version newer than the set's is reused in any case.",
    )
    wait_for_other_run: bool = _WAIT
    plan_only: bool = PLAN_ONLY


def des_id(subscription_id: str, resource_group: str, name: str) -> str:
    """The resource id of a set."""
    return resource_id(
        subscription=subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.Compute",
        type="diskEncryptionSets",
        name=name,
    )


def des_key_state(des: DiskEncryptionSet, key_url: str) -> str:
    """How far the set is in moving to `key_url`: 'old key', 're-wrapping' (previousKeys
    not empty yet) or 'done'; OperationFailed when its automatic rotation reports an error."""
    props = des.properties
    if props.auto_key_rotation_error:
        raise OperationFailed(
            str(des.id),
            f"automatic key rotation failed: {props.auto_key_rotation_error.message}",
        )
    if props.active_key.key_url != key_url:
        return "old key"
    return "re-wrapping" if props.previous_keys else "done"


def des_info(des: DiskEncryptionSet) -> DiskEncryptionSetInfo:
    """The typed summary of a set."""
    props = des.properties
    return DiskEncryptionSetInfo(
        id=str(des.id),
        name=str(des.name),
        location=str(des.location),
        key_url=str(props.active_key.key_url),
        principal_id=str(des.identity.principal_id or _user_assigned_principal(des)),
        encryption_type=text(props.encryption_type),
        rotation_to_latest_key_version=bool(props.rotation_to_latest_key_version_enabled),
    )


def _user_assigned_principal(des: DiskEncryptionSet) -> str | None:
    """The principal id of a set's user-assigned identity (a set has one identity)."""
    identities = des.identity.user_assigned_identities or {}
    return next((v.principal_id for v in identities.values() if v.principal_id), None)


def check_existing_des(des: DiskEncryptionSet, encryption_type: str) -> None:
    """The encryption type of a set cannot change after creation."""
    if text(des.properties.encryption_type) != encryption_type:
        raise InvalidRequest(
            "encryption_type",
            encryption_type,
            f"disk encryption set '{des.name}' already exists with "
            f"{des.properties.encryption_type}, which cannot be changed; "
            "use another name",
        )


def des_body(
    location: str,
    store: KeyStore,
    key: KeyInfo,
    encryption_type: str,
    auto_rotation: bool,
    *,
    identity_id: str | None = None,
    federated_client_id: str | None = None,
) -> DiskEncryptionSet:
    """A set with the versioned key URL and a system-assigned identity, or the user-assigned
    `identity_id`. With `federated_client_id` (a cross-tenant key) the set names its key by
    URL only: the vault is in another tenant's subscription (the body of "Encrypt managed
    disks with cross-tenant customer-managed keys", REST API section,
    https://learn.microsoft.com/azure/virtual-machines/disks-cross-tenant-customer-managed-keys)."""
    identity = (
        EncryptionSetIdentity(
            type="UserAssigned",
            user_assigned_identities={identity_id: UserAssignedIdentitiesValue()},
        )
        if identity_id
        else EncryptionSetIdentity(type="SystemAssigned")
    )
    vault = None if federated_client_id else SourceVault(id=store.id)
    return DiskEncryptionSet(
        location=location,
        identity=identity,
        properties=EncryptionSetProperties(
            active_key=KeyForDiskEncryptionSet(key_url=key.id, source_vault=vault),
            encryption_type=encryption_type,
            rotation_to_latest_key_version_enabled=auto_rotation,
            federated_client_id=federated_client_id,
        ),
    )
