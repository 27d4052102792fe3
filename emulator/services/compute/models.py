"""Microsoft.Compute resource types. Disk encryption sets are long-running operations
answered 202 with an Azure-AsyncOperation monitor, as Azure does; their rules come with the
disk-encryption-set flow."""

from __future__ import annotations

from emulator.services.arm.models import ArmModel, TypeSpec

DISK_ENCRYPTION_SET_TYPE = "Microsoft.Compute/diskEncryptionSets"


def register_types(arm: ArmModel) -> None:
    """Serve the compute types."""
    arm.register_type(
        TypeSpec(
            DISK_ENCRYPTION_SET_TYPE,
            lro="azure-async-operation",
            create_status=202,
            update_status=202,
            delete_lro="location",
        )
    )
