"""What the inventory finds, one `Finding` per resource or per part of one (an image
version's region and disk), and what it concludes, one `EvidenceRow` per finding and
control."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Kind(StrEnum):
    """The kinds of resources whose encryption the inventory reports."""

    SUBSCRIPTION = "subscription"
    DISK_ENCRYPTION_SET = "disk-encryption-set"
    DISK = "disk"
    VIRTUAL_MACHINE = "virtual-machine"
    IMAGE_VERSION = "image-version"
    REGISTRY = "registry"
    AKS_CLUSTER = "aks-cluster"
    AKS_NODE_POOL = "aks-node-pool"
    STORAGE_CLASS = "storage-class"
    KEY_VAULT_KEY = "key-vault-key"
    IBM_ROOT_KEY = "ibm-root-key"
    IBM_IMAGE = "ibm-cos-image"  # an encrypted image in COS, its wrapped DEK in its metadata
    IBM_IMAGE_TEMPLATE = "ibm-image-template"  # SoftLayer (classic)
    IBM_VPC_IMAGE = "ibm-vpc-image"
    IBM_REGISTERED = "ibm-registered-resource"  # another resource registered with a root key


class Verdict(StrEnum):
    """A control's outcome for one finding."""

    COMPLIANT = "compliant"
    NON_COMPLIANT = "non-compliant"
    NOT_APPLICABLE = "not-applicable"
    NO_ACCESS = "no-access"


class RotationPolicy(BaseModel):
    """A key's rotation policy as Key Vault (or Key Protect) holds it, in days."""

    rotate_after_days: int | None = None
    rotate_before_expiry_days: int | None = None
    notify_before_expiry_days: int | None = None
    expires_after_days: int | None = None

    @property
    def rotates(self) -> bool:
        """Whether the policy makes new versions by itself."""
        return self.rotate_after_days is not None or self.rotate_before_expiry_days is not None


class KeyState(BaseModel):
    """The key version a resource uses, and the store that holds it."""

    key_id: str = Field(description="Key URL (Key Vault) or key id (Key Protect).")
    version: str | None = None
    created: datetime | None = None
    enabled: bool | None = None
    expires: datetime | None = None
    rotation_policy: RotationPolicy | None = None
    last_rotation: datetime | None = None
    store_id: str | None = Field(None, description="Vault resource id or Key Protect instance.")
    store_kind: str | None = Field(None, description="'key-vault' or 'managed-hsm'.")
    store_soft_delete: bool | None = None
    store_purge_protection: bool | None = None
    tenant_id: str | None = Field(None, description="The tenant of the key's store.")
    readable: bool = Field(True, description="False: these credentials cannot read the key.")


class Finding(BaseModel):
    """One resource (or one part of one) whose encryption matters."""

    resource_id: str
    kind: Kind
    scope: str = Field(description="Subscription id (Azure) or account id (IBM).")
    region: str = ""
    part: str = Field("", description="e.g. 'westeurope/os-disk', 'westeurope/lun-1'.")
    encryption_type: str | None = None
    customer_key: bool = False
    key: KeyState | None = None
    identity: str | None = None
    via: str | None = Field(
        None, description="What links it to its key (a set's id, an image's COS object)."
    )
    attached_to: str | None = Field(None, description="A disk's VM (`managedBy`).")
    wrapped_by_version: str | None = Field(
        None, description="IBM: the root-key version that wrapped the image's DEK."
    )
    encryption_at_host: bool | None = Field(None, description="A VM's or node pool's.")
    security_type: str | None = Field(
        None, description="A VM's securityType; a disk's securityEncryptionType."
    )
    federated_client_id: str | None = Field(None, description="A cross-tenant set's app.")
    previous_key_version: str | None = Field(
        None, description="AKS KMS: the version in the second key slot (cluster tag)."
    )
    rotation: str | None = Field(
        None, description="AKS KMS: the last rotation recorded, and a cluster not settled."
    )
    blocks_rotation: list[str] = Field(
        default_factory=list,
        description="A confidential VM set: its VMs not deallocated (its key cannot change).",
    )
    access: bool = Field(True, description="False: the credentials cannot read it.")
    note: str = ""


class EvidenceRow(BaseModel):
    """One finding judged by one control: a line of the report."""

    resource_id: str
    kind: Kind
    scope: str
    region: str
    part: str
    encryption_type: str | None
    key_id: str | None
    key_version: str | None
    key_store: str | None
    identity: str | None
    key_created: datetime | None
    key_enabled: bool | None
    key_expires: datetime | None
    key_age_days: int | None
    rotation_policy: bool
    rotate_after_days: int | None
    notify_before_expiry_days: int | None
    last_rotation: datetime | None
    key_store_kind: str | None = None
    key_tenant: str | None = None
    federated_client_id: str | None = None
    previous_key_version: str | None = None
    rotation: str | None = None
    encryption_at_host: bool | None = None
    security_type: str | None = None
    blocks_rotation: str | None = Field(None, description="VM ids, space-separated.")
    control: str
    verdict: Verdict
    rule: str
