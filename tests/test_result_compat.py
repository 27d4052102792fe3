"""Results persisted by earlier runs still load, and requests of existing deployments still
parse: the models moved to the library keep answering to their old import paths (pickled
results name their classes by module), and results keep their shape."""

from __future__ import annotations

import importlib

import pytest

from byok import acr_models, aks_models, gallery, key_store, registration_models, vm_models
from byok import disk_encryption_set_models as des

OLD_PATHS = [  # where persisted results and deployments found each class before the move
    ("tasks.key_vault", "VaultInfo", key_store.VaultInfo),
    ("tasks.key_vault", "KeyInfo", key_store.KeyInfo),
    ("tasks.disk_encryption_set", "DiskEncryptionSetInfo", des.DiskEncryptionSetInfo),
    ("flows.disk_encryption_set", "DiskEncryptionSetResult", des.DiskEncryptionSetResult),
    ("flows.disk_encryption_set", "DiskEncryptionSetRequest", des.DiskEncryptionSetRequest),
    ("tasks.gallery", "ImageVersionResult", gallery.ImageVersionResult),
    ("tasks.gallery", "RegionResult", gallery.RegionResult),
    ("flows.gallery", "ImageVersionRequest", gallery.ImageVersionRequest),
    ("tasks.acr", "RegistryInfo", acr_models.RegistryInfo),
    ("tasks.acr", "EncryptionStatus", acr_models.EncryptionStatus),
    ("flows.acr", "EncryptedRegistryResult", acr_models.EncryptedRegistryResult),
    ("flows.acr", "EncryptedRegistryRequest", acr_models.EncryptedRegistryRequest),
    ("flows.virtual_machine", "VmFromImageRequest", vm_models.VmFromImageRequest),
    ("flows.virtual_machine", "VmResult", vm_models.VmResult),
    ("tasks.aks", "ClusterInfo", aks_models.ClusterInfo),
    ("flows.aks", "AksClusterRequest", aks_models.AksClusterRequest),
    ("flows.aks", "NodePoolRequest", aks_models.NodePoolRequest),
    ("flows.aks", "DataDiskEncryptionRequest", aks_models.DataDiskEncryptionRequest),
    ("flows.registration", "FeatureRegistrationRequest",
     registration_models.FeatureRegistrationRequest),
    ("flows.registration", "FeatureRegistrationResult",
     registration_models.FeatureRegistrationResult),
    ("flows.registration", "FeatureNotAvailable", registration_models.FeatureNotAvailable),
    ("tasks.registration", "FeatureApprovalRequired",
     registration_models.FeatureApprovalRequired),
]  # fmt: skip


@pytest.mark.parametrize(("module", "name", "cls"), OLD_PATHS)
def test_old_import_paths_name_the_moved_classes(module: str, name: str, cls: type) -> None:
    assert getattr(importlib.import_module(module), name) is cls


def test_a_result_from_before_the_key_store_seam_parses_and_dumps_the_same() -> None:
    vault = {"id": "/v", "name": "kv", "url": "https://kv", "location": "westeurope", "rbac": True}
    key = {"id": "https://kv/keys/k/1", "versionless_id": "https://kv/keys/k", "name": "k",
           "version": "1", "size": 3072}  # fmt: skip
    the_set = {"id": "/d", "name": "d", "location": "westeurope", "key_url": key["id"],
           "principal_id": "p", "encryption_type": "EncryptionAtRestWithCustomerKey",
           "rotation_to_latest_key_version": False}  # fmt: skip
    result = des.DiskEncryptionSetResult.model_validate(
        {"disk_encryption_set": the_set, "vault": vault, "key": key}
    )
    assert result.vault.kind == "key-vault"
    assert result.model_dump() == {"disk_encryption_set": the_set, "vault": vault, "key": key}


@pytest.mark.parametrize(
    ("versioned", "follow", "expected"),
    [
        ("https://kv.vault.azure.net/keys/k/abc", True, "https://kv.vault.azure.net/keys/k"),
        ("https://kv.vault.azure.net/keys/k/abc", False, "https://kv.vault.azure.net/keys/k/abc"),
    ],
)
def test_key_reference(versioned: str, follow: bool, expected: str) -> None:
    assert key_store.key_reference(versioned, follow) == expected
