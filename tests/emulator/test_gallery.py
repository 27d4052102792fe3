"""Image version rules of the emulator, through the real ComputeManagementClient."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import HttpResponseError

from clients.azure import AzureClients
from emulator.server import Emulator
from tests.helpers import des_in_region, gallery_image, managed_image


@pytest.fixture
def image(azure: AzureClients, emulator: Emulator) -> tuple[str, str]:
    des = des_in_region(azure, emulator, "westeurope", "des-we")
    source = managed_image(azure, "westeurope")
    gallery_image(azure)
    return des, source


def version(source: str, encryption: dict | None) -> dict:
    region: dict = {"name": "westeurope"}
    if encryption:
        region["encryption"] = encryption
    return {
        "location": "westeurope",
        "properties": {
            "publishingProfile": {"targetRegions": [region]},
            "storageProfile": {"source": {"id": source}},
        },
    }


def test_replication_status_is_served(azure: AzureClients, image: tuple[str, str]) -> None:
    des, source = image
    versions = azure.compute().gallery_image_versions
    body = version(source, {"osDiskImage": {"diskEncryptionSetId": des}})
    versions.begin_create_or_update("rg-img", "g1", "img", "1.0.0", body, polling=False)
    started = versions.get("rg-img", "g1", "img", "1.0.0", expand="ReplicationStatus")
    assert started.properties.replication_status.summary[0].state == "Replicating"
    with pytest.raises(HttpResponseError, match="AnotherOperationInProgress"):
        versions.begin_create_or_update("rg-img", "g1", "img", "1.0.0", body)
    deadline = time.monotonic() + 10
    while True:
        found = versions.get("rg-img", "g1", "img", "1.0.0", expand="ReplicationStatus")
        if found.properties.provisioning_state == "Succeeded":
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [s.progress for s in found.properties.replication_status.summary] == [100]


def test_cannot_go_back_to_platform_keys(azure: AzureClients, image: tuple[str, str]) -> None:
    des, source = image
    versions = azure.compute().gallery_image_versions
    versions.begin_create_or_update(
        "rg-img",
        "g1",
        "img",
        "1.0.0",
        version(source, {"osDiskImage": {"diskEncryptionSetId": des}}),
    ).result()
    with pytest.raises(HttpResponseError, match="cannot go back to platform-managed keys"):
        versions.begin_create_or_update(
            "rg-img", "g1", "img", "1.0.0", version(source, None)
        ).result()


@pytest.mark.parametrize("generation", ["V1", "V2"])
def test_source_generation_must_match_the_definition(
    azure: AzureClients, image: tuple[str, str], generation: str
) -> None:
    compute = azure.compute()
    compute.gallery_images.begin_create_or_update(
        "rg-img",
        "g1",
        "img2",
        {
            "location": "westeurope",
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "hyperVGeneration": "V2",
                "identifier": {"publisher": "p", "offer": "o", "sku": "s2"},
            },
        },
    ).result()
    source = compute.images.begin_create_or_update(
        "rg-img",
        f"src-{generation}",
        {
            "location": "westeurope",
            "properties": {
                "hyperVGeneration": generation,
                "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized"}},
            },
        },
    ).result()
    poller = compute.gallery_image_versions.begin_create_or_update(
        "rg-img", "g1", "img2", "1.0.0", version(str(source.id), None)
    )
    if generation == "V2":
        assert poller.result().provisioning_state == "Succeeded"
        return
    with pytest.raises(HttpResponseError) as info:
        poller.result()
    assert info.value.error.code == "Conflict"
    assert info.value.error.message == (
        f"The resource with id '{source.id}' has a different Hypervisor generation ['V1'] "
        "than the parent gallery image Hypervisor generation ['V2']."
    )
    failed = compute.gallery_image_versions.get("rg-img", "g1", "img2", "1.0.0")
    assert failed.provisioning_state == "Failed"


def test_a_version_from_a_managed_image_shows_its_disk_images(
    azure: AzureClients, image: tuple[str, str]
) -> None:
    des, source = image
    versions = azure.compute().gallery_image_versions
    body = version(source, {"osDiskImage": {"diskEncryptionSetId": des}})
    made = versions.begin_create_or_update("rg-img", "g1", "img", "1.0.0", body).result()
    storage = made.storage_profile
    assert storage.source.id == source
    assert storage.os_disk_image.host_caching == "ReadWrite"
    assert [d.lun for d in storage.data_disk_images] == [0, 1]  # the managed image's data disks
