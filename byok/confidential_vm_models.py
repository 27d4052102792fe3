"""Confidential VMs with customer keys (no Prefect import): the requests and results of the
prepare and offline-rotation flows, the confidential-VM release policy, and the record of a
rotation in progress kept in the set's tags.

Sources: "Create a confidential VM with the Azure CLI" (Premium vault, `--exportable` RSA-HSM
key with the CVM release policy, the Confidential VM Orchestrator granted get and release, a
set of type ConfidentialVmEncryptedWithCustomerKey:
https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-azure-cli)
and "Rotate customer-managed keys for confidential VMs" (stop every VM on the set, change its
key, start them: https://learn.microsoft.com/azure/confidential-computing/key-rotation-offline)."""

from __future__ import annotations

from typing import Literal

from azure.mgmt.compute import models as compute
from azure.mgmt.core.tools import parse_resource_id
from pydantic import BaseModel, Field, field_validator, model_validator

from byok.disk_encryption_set_models import DiskEncryptionSetInfo
from byok.errors import InvalidRequest
from byok.key_sources import HSM_GROUP_FIELD, KEY_STORE_FIELD, StoreKind, check_store_named
from byok.key_store import KeyInfo, KeyStore
from byok.outcomes import PLAN_ONLY
from byok.parameters import AZURE_BLOCK_NAME
from byok.vm_models import linux_os_profile

CONFIDENTIAL_ENCRYPTION = "ConfidentialVmEncryptedWithCustomerKey"
# Microsoft's first-party app a tenant installs once (`az ad sp create --id …`, the quickstart
# above); Azure releases the set's key to it when a confidential VM starts.
ORCHESTRATOR_APP_ID = "bf7b6499-ff71-4aa2-97a4-f372087be7f0"
ORCHESTRATOR_NAME = "Confidential VM Orchestrator"
ORCHESTRATOR_KEY_PERMISSIONS = ["get", "release"]
# Its role on RBAC vaults, assigned at the key's scope ("Key Vault Crypto Service Release
# User": the release data action only,
# https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/security).
RELEASE_USER = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"
# Its local role on a managed HSM, at /keys/<key> ("Managed HSM Crypto Service Release User":
# `az keyvault role assignment create --hsm-name … --role "Managed HSM Crypto Service Release
# User" --scope /keys/$KeyName` in "Deploy confidential VM with ARM template",
# https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-arm;
# id: https://learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles).
HSM_RELEASE_USER = "21dbd100-6940-42c2-9190-5d6cb909625c"
# The record of a rotation in progress, on the set: its id, and the VMs to start again.
RECORD_TAG = "byok-cvm-rotation"
RUNNING_TAG = "byok-cvm-running-"  # + 1, 2, …: comma-separated `<group>/<vm>` chunks
# The measured stop-and-start time of the set's VMs in the last rotation (seconds).
MEASURED_TAG = "byok-cvm-stop-start-seconds"
# Image definitions a confidential VM may come from (their SecurityType feature).
CONFIDENTIAL_IMAGES = ("ConfidentialVmSupported", "ConfidentialVM")
# The ARM actions of the rotation's writes (Contributor grants them).
VM_DEALLOCATE = "Microsoft.Compute/virtualMachines/deallocate/action"
VM_START = "Microsoft.Compute/virtualMachines/start/action"
TAG_VALUE_LIMIT = 256  # Azure tags: 50 per resource, values up to 256 characters
TAG_COUNT_LIMIT = 50  # (https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations)

_BLOCK = Field(None, description=AZURE_BLOCK_NAME)
_WAIT = Field(
    False,
    description="When another run is working on the same disk encryption set: wait for it "
    "(true), or fail at once with `another run is working on <set id>` (false).",
)


def release_policy(authority: str) -> dict[str, object]:
    """The release policy `az keyvault key create --default-cvm-policy` writes: release to a
    VM that the region's attestation provider found an Azure-compliant confidential VM
    (azure-cli's keyvault `_fetch_default_release_policy`)."""
    return {
        "version": "1.0.0",
        "anyOf": [
            {
                "authority": authority,
                "allOf": [{"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"}],
            }
        ],
    }


class ConfidentialVmSpec(BaseModel):
    """A confidential VM on the set, from a gallery image version."""

    vm_name: str = Field(..., pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$", description="VM name.")
    image_version_id: str = Field(
        ...,
        description="Gallery image version whose image definition has the SecurityType "
        "feature `ConfidentialVmSupported` (or `ConfidentialVM`), in the set's region.",
    )
    vm_size: str = Field(
        "Standard_DC2as_v5", description="A confidential VM size (DCasv5, ECasv5 series…)."
    )
    admin_username: str = Field("azureuser", description="Administrator user name.")
    ssh_public_key: str = Field(..., description="OpenSSH public key of the administrator.")
    subnet_id: str | None = Field(
        None, description="Subnet of its NIC; empty: a minimal virtual network made for it."
    )

    def to_sdk(self, location: str, set_id: str, nic_id: str) -> compute.VirtualMachine:
        """The VM: `securityType: ConfidentialVM` with secure boot and vTPM, its OS disk and
        guest state encrypted by the set (`securityEncryptionType: DiskWithVMGuestState`,
        `az vm create --security-type ConfidentialVM --os-disk-security-encryption-type
        DiskWithVMGuestState --os-disk-secure-vm-disk-encryption-set`)."""
        disk = compute.ManagedDiskParameters(
            security_profile=compute.VMDiskSecurityProfile(
                security_encryption_type="DiskWithVMGuestState",
                disk_encryption_set=compute.DiskEncryptionSetParameters(id=set_id),
            )
        )
        return compute.VirtualMachine(
            location=location,
            properties=compute.VirtualMachineProperties(
                hardware_profile=compute.HardwareProfile(vm_size=self.vm_size),
                security_profile=compute.SecurityProfile(
                    security_type="ConfidentialVM",
                    uefi_settings=compute.UefiSettings(
                        secure_boot_enabled=True, v_tpm_enabled=True
                    ),
                ),
                storage_profile=compute.StorageProfile(
                    image_reference=compute.ImageReference(id=self.image_version_id),
                    os_disk=compute.OSDisk(create_option="FromImage", managed_disk=disk),
                ),
                os_profile=linux_os_profile(self.vm_name, self.admin_username, self.ssh_public_key),
                network_profile=compute.NetworkProfile(
                    network_interfaces=[compute.NetworkInterfaceReference(id=nic_id)]
                ),
            ),
        )


class ConfidentialVmEncryptionRequest(BaseModel):
    """Where the confidential-VM set, its Premium vault (or managed HSM) and its key go."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group (created if missing).")
    location: str = Field(..., description="Region of the set, its key store and the VMs.")
    key_store: StoreKind = KEY_STORE_FIELD
    vault_name: str | None = Field(
        None,
        description="Key vault (created with purge protection if missing); a Standard vault "
        "is moved to Premium, which exportable keys need. Required with key_store key-vault.",
    )
    vault_rbac: bool = Field(
        False,
        description="A new vault uses Azure RBAC (else access policies, as Microsoft's "
        "quickstart); an existing vault keeps its own model.",
    )
    hsm_name: str | None = Field(
        None,
        description="Managed HSM holding the key, with key_store managed-hsm: an existing, "
        "activated HSM in `location` with purge protection on (key release needs it), which "
        "this tool adopts and never creates. This tool's principal needs its local roles "
        "Managed HSM Crypto User and Crypto Officer, granted by its administrators.",
    )
    hsm_resource_group: str | None = HSM_GROUP_FIELD
    key_name: str = Field(
        ...,
        description="Exportable RSA-HSM key with the confidential-VM release policy (created "
        "if missing; an existing key without them is refused).",
    )
    key_size: Literal[2048, 3072, 4096] = Field(3072, description="RSA key size in bits.")
    attestation_authority: str = Field(
        ...,
        description="The region's Microsoft Azure Attestation provider the release policy "
        "trusts, e.g. `https://sharedweu.weu.attest.azure.net` (the `attestUri` of "
        "`az attestation show` or of the region's default provider).",
    )
    des_name: str = Field(..., description="Disk encryption set name.")
    vm: ConfidentialVmSpec | None = Field(
        None, description="A confidential VM to create on the set (get or create); empty: none."
    )
    propagation_timeout_minutes: float = Field(
        15, gt=0, description="How long to wait for new identities and grants to propagate."
    )
    wait_for_other_run: bool = _WAIT
    plan_only: bool = PLAN_ONLY

    @field_validator("attestation_authority")
    @classmethod
    def _authority(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise InvalidRequest(
                "attestation_authority", value, "must be the provider's https:// address"
            )
        return value

    @model_validator(mode="after")
    def _store_named(self) -> ConfidentialVmEncryptionRequest:
        check_store_named(self.key_store, self.vault_name, self.hsm_name)
        return self

    @property
    def hsm_group(self) -> str:
        """The managed HSM's resource group."""
        return self.hsm_resource_group or self.resource_group


class ConfidentialVmEncryptionResult(BaseModel):
    """What was prepared."""

    disk_encryption_set: DiskEncryptionSetInfo
    vault: KeyStore
    key: KeyInfo
    orchestrator_object_id: str
    vm_id: str | None = None


class ConfidentialRotationRequest(BaseModel):
    """Which confidential-VM set's key to rotate, in which maintenance window."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the set.")
    des_name: str = Field(
        ..., description="Disk encryption set (type " + CONFIDENTIAL_ENCRYPTION + ")."
    )
    maintenance_window_minutes: float = Field(
        ...,
        gt=0,
        description="How long the set's VMs may be down. Refused before any write when shorter "
        "than their stop and start time (measured by the last rotation of this set, else "
        "`stop_start_estimate_minutes`).",
    )
    stop_start_estimate_minutes: float = Field(
        15,
        gt=0,
        description="Your estimate of the time to deallocate the set's VMs and start them "
        "again, used until a rotation of this set has measured it.",
    )
    plan_only: bool = Field(
        False,
        description="Report the VMs on the set, the ones the rotation would stop and start, "
        "and what each step would do (the `rotate-confidential-vm-key-plan` artifact and the "
        "run's result); write nothing.",
    )
    rotation_id: str | None = Field(
        None,
        description="Names this rotation: a re-run with the same value reuses the key version "
        "it made. Empty: this flow run's id. A rotation left unfinished on the set (its "
        f"`{RECORD_TAG}` tag) is finished first, under its own id.",
    )
    timeout_minutes: float = Field(
        30, gt=0, description="How long to wait for the set to report the new version."
    )
    poll_seconds: float = Field(10, gt=0, description="Seconds between checks.")
    wait_for_other_run: bool = _WAIT


PowerState = str  # Azure's PowerState/<state>: running, starting, stopping, stopped, deallocated…


class SetVm(BaseModel):
    """A VM with a disk on the set, and its power state."""

    id: str
    resource_group: str
    name: str
    power_state: PowerState

    @property
    def ref(self) -> str:
        """`<group>/<name>` (a set's VMs are in its subscription)."""
        return f"{self.resource_group}/{self.name}"

    @property
    def was_running(self) -> bool:
        """Whether the rotation must start it again (running, or on its way there)."""
        return self.power_state in ("running", "starting")


class RotationRecord(BaseModel):
    """A rotation in progress: its id and the VMs that were running before it."""

    rotation_id: str
    running: list[str]  # `<group>/<name>`

    def to_tags(self) -> dict[str, str]:
        """The record as tags (VM references packed into values of at most 256 characters)."""
        tags = {RECORD_TAG: self.rotation_id}
        chunk: list[str] = []
        for ref in self.running:
            if chunk and len(",".join([*chunk, ref])) > TAG_VALUE_LIMIT:
                tags[f"{RUNNING_TAG}{len(tags)}"] = ",".join(chunk)
                chunk = []
            chunk.append(ref)
        if chunk:
            tags[f"{RUNNING_TAG}{len(tags)}"] = ",".join(chunk)
        return tags

    @classmethod
    def from_tags(cls, tags: dict[str, str] | None) -> RotationRecord | None:
        """The record a set's tags hold, or None."""
        tags = tags or {}
        if RECORD_TAG not in tags:
            return None
        chunks = sorted(
            (int(k[len(RUNNING_TAG) :]), v)
            for k, v in tags.items()
            if k.startswith(RUNNING_TAG) and k[len(RUNNING_TAG) :].isdigit()
        )
        running = [ref for _, value in chunks for ref in value.split(",") if ref]
        return cls(rotation_id=tags[RECORD_TAG], running=running)


def without_record(tags: dict[str, str] | None) -> dict[str, str]:
    """The set's tags without a rotation record."""
    return {
        k: v for k, v in (tags or {}).items() if k != RECORD_TAG and not k.startswith(RUNNING_TAG)
    }


def recorded_tags(tags: dict[str, str] | None, record: RotationRecord) -> dict[str, str]:
    """The set's tags with `record`; InvalidRequest when they would pass Azure's 50."""
    merged = {**without_record(tags), **record.to_tags()}
    if len(merged) > TAG_COUNT_LIMIT:
        raise InvalidRequest(
            "des_name",
            len(merged),
            f"recording the VMs to start again needs {len(record.to_tags())} tags on the set; "
            f"a resource holds at most {TAG_COUNT_LIMIT}: remove some of its tags",
        )
    return merged


def finished_tags(tags: dict[str, str] | None, measured_seconds: float | None) -> dict[str, str]:
    """The set's tags once its rotation is done: no record, and the measured stop-and-start
    time when this run measured one."""
    done = without_record(tags)
    if measured_seconds is not None:
        done[MEASURED_TAG] = f"{measured_seconds:.0f}"
    return done


def set_ids_of(vm: compute.VirtualMachine) -> set[str]:
    """The (lower-cased) ids of the sets a VM's disks name: `managedDisk.diskEncryptionSet`,
    and for a confidential VM's OS disk `managedDisk.securityProfile.diskEncryptionSet`."""
    storage = vm.properties.storage_profile if vm.properties else None
    disks = [storage.os_disk, *(storage.data_disks or [])] if storage else []
    found = set()
    for disk in disks:
        managed = disk.managed_disk if disk else None
        if managed is None:
            continue
        security = managed.security_profile
        for des in (
            managed.disk_encryption_set,
            security.disk_encryption_set if security else None,
        ):
            if des is not None and des.id:
                found.add(str(des.id).lower())
    return found


def check_confidential_set(des: DiskEncryptionSetInfo) -> None:
    """Only a confidential-VM set rotates offline."""
    if des.encryption_type != CONFIDENTIAL_ENCRYPTION:
        raise InvalidRequest(
            "des_name",
            des.name,
            f"the set's encryption type is {des.encryption_type}, not {CONFIDENTIAL_ENCRYPTION}: "
            "rotate it with rotate-disk-encryption-set-key (no VM needs to stop)",
        )


def stop_start_seconds(tags: dict[str, str] | None, estimate_minutes: float) -> float:
    """The set's VMs' stop-and-start time: measured by its last rotation, else the estimate."""
    measured = (tags or {}).get(MEASURED_TAG)
    try:
        return float(measured) if measured is not None else estimate_minutes * 60
    except ValueError:
        return estimate_minutes * 60


class RotationPlan(BaseModel):
    """What the rotation of a set does, read before any write."""

    des: DiskEncryptionSetInfo
    vms: list[SetVm]
    record: RotationRecord = Field(description="The rotation (an unfinished one, or new).")
    rotated: bool = Field(description="The set is on this rotation's key version already.")
    pending: bool = Field(
        description="A rotation to carry out or finish (False: done, its record cleared)."
    )
    to_stop: list[str]
    to_start: list[str]

    @property
    def des_group(self) -> str:
        """The set's resource group."""
        return str(parse_resource_id(self.des.id)["resource_group"])


class ConfidentialRotationResult(BaseModel):
    """What the rotation did."""

    disk_encryption_set_id: str
    vms: list[SetVm] = Field(description="The VMs on the set and their power states before.")
    to_stop: list[str] = Field(description="VMs deallocated (`<group>/<name>`).")
    to_start: list[str] = Field(description="VMs started again: the ones that were running.")
    old_key: str
    new_key: str
    stop_start_seconds: float | None = Field(
        None, description="Measured: deallocating and starting the VMs (this run)."
    )


def rotation_result(
    plan: RotationPlan, new_key: str, measured: float | None = None
) -> ConfidentialRotationResult:
    """The result of a rotation."""
    return ConfidentialRotationResult(
        disk_encryption_set_id=plan.des.id,
        vms=plan.vms,
        to_stop=plan.to_stop,
        to_start=plan.to_start,
        old_key=plan.des.key_url,
        new_key=new_key,
        stop_start_seconds=measured,
    )
