"""The gallery image version flow end to end: two regions, an OS disk and two data-disk LUNs,
each rule, and a crash during replication adopted by the re-run."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from prefect import tags
from prefect.events import emit_event
from pydantic import ValidationError

from byok.errors import ConcurrentRun, OperationFailed
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from flows.gallery import ImageVersionRequest, publish_encrypted_image_version
from tests.flows.refusals import refused, writes
from tests.flows.test_events import byok_events
from tests.helpers import des_in_region, managed_image

VERSION_TYPE = "Microsoft.Compute/galleries/images/versions"


@pytest.fixture
def setup(azure: AzureClients, emulator: Emulator) -> dict[str, str]:
    return {
        "we_os": des_in_region(azure, emulator, "westeurope", "des-we-os"),
        "we_data": des_in_region(azure, emulator, "westeurope", "des-we-data"),
        "us_os": des_in_region(azure, emulator, "eastus", "des-us-os"),
        "image": managed_image(azure, "westeurope"),
    }


def request(block: str, setup: dict[str, str], **overrides: object) -> ImageVersionRequest:
    return ImageVersionRequest(**request_json(block, setup, **overrides))


def request_json(block: str, setup: dict[str, str], **overrides: object) -> dict[str, Any]:
    """The request as a deployment passes it."""
    values: dict[str, Any] = {
        "azure_credentials_block": block,
        "resource_group": "rg-img",
        "location": "westeurope",
        "gallery_name": "gallery1",
        "image_name": "ubuntu",
        "version": "1.0.0",
        "source": {"managed_image_id": setup["image"]},
        "target_regions": [
            {
                "name": "westeurope",
                "replica_count": 2,
                "encryption": f"{setup['we_os']},0,{setup['we_data']},1,{setup['we_data']}",
            },
            {
                "name": "eastus",
                "encryption": {
                    "os_disk_encryption_set": setup["us_os"],
                    "data_disks": [
                        {"lun": 0, "disk_encryption_set": setup["us_os"]},
                        {"lun": 1, "disk_encryption_set": "des-us-os"},
                    ],
                },
            },
        ],
        "poll_seconds": 0.05,
        "replication_timeout_minutes": 0.5,
    }
    values.update(overrides)
    return values


def versions(emulator: Emulator) -> list[dict]:
    return [r for r in emulator.arm.resources.values() if r["type"] == VERSION_TYPE]


def test_publish_two_regions_three_disks(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption")
    result = publish_encrypted_image_version(request(azure_block, setup))
    we, us = result.regions
    assert (we.name, we.replica_count, we.replication_state) == ("westeurope", 2, "Completed")
    assert we.os_disk_encryption_set_id == setup["we_os"]
    assert we.data_disk_encryption_set_ids == {0: setup["we_data"], 1: setup["we_data"]}
    assert us.data_disk_encryption_set_ids == {0: setup["us_os"], 1: setup["us_os"]}
    stored = versions(emulator)[0]
    assert stored["properties"]["provisioningState"] == "Succeeded"
    sub = emulator.identity.subscription_id
    assert emulator.arm.feature("Microsoft.Compute", "SIGEncryption", sub).state == "Registered"
    assert len(emulator.requests.find("GET", "versions/1.0.0$")) >= 2  # progress was polled


def test_crash_during_replication_then_rerun_adopts_the_version(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    emulator.state.image_versions.replication_seconds = 2.0
    with pytest.raises(TimeoutError, match="still 'replicating'"):
        publish_encrypted_image_version(
            request(azure_block, setup, replication_timeout_minutes=0.005)
        )
    assert versions(emulator)[0]["properties"]["provisioningState"] == "Creating"
    result = publish_encrypted_image_version(request(azure_block, setup))
    assert len(versions(emulator)) == 1
    assert len(emulator.requests.find("PUT", "versions/1.0.0$")) == 1
    assert {r.replication_state for r in result.regions} == {"Completed"}


def test_failed_region_is_named(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    emulator.state.image_versions.failing_regions.add("eastus")
    with pytest.raises(OperationFailed, match="failed in eastus"):
        publish_encrypted_image_version(request(azure_block, setup))


def test_des_in_another_region_is_refused(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    bad = request(azure_block, setup).model_dump()
    bad["target_regions"][1]["encryption"]["os_disk_encryption_set"] = setup["we_os"]
    with pytest.raises(InvalidRequest) as refused_error:
        publish_encrypted_image_version(ImageVersionRequest(**bad))
    assert str(refused_error.value) == (
        f"target_regions[1].encryption.os_disk_encryption_set = {setup['we_os']!r}: "
        "the disk encryption set is in westeurope, not in eastus"
    )
    assert not emulator.requests.find("PUT", "galleries")


def test_des_in_another_subscription_is_refused(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    other = setup["us_os"].replace(
        emulator.identity.subscription_id, "00000000-0000-0000-0000-000000000001"
    )
    bad = request(azure_block, setup).model_dump()
    bad["target_regions"][1]["encryption"]["os_disk_encryption_set"] = other
    with pytest.raises(InvalidRequest, match="image's subscription"):
        publish_encrypted_image_version(ImageVersionRequest(**bad))


def test_luns_must_match_the_source(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    bad = request(azure_block, setup).model_dump()
    bad["target_regions"][0]["encryption"]["data_disks"][1]["lun"] = 5
    with pytest.raises(InvalidRequest, match=r"have LUNs \[0, 1\]"):
        publish_encrypted_image_version(ImageVersionRequest(**bad))


def test_region_without_encryption_is_refused(azure_block: str, setup: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=r"target_regions\[1\].encryption = None: every"):
        request(
            azure_block,
            setup,
            target_regions=[
                {"name": "westeurope", "encryption": setup["we_os"]},
                {"name": "eastus"},
            ],
        )


def test_past_end_of_life_is_refused(azure_block: str, setup: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not in the future"):
        request(azure_block, setup, end_of_life_date="2020-01-01T00:00:00Z")


def test_encrypted_version_cannot_be_a_source_nor_shared(
    azure_block: str, emulator: Emulator, setup: dict[str, str], azure: AzureClients
) -> None:
    first = publish_encrypted_image_version(request(azure_block, setup, ensure_feature=False))
    with pytest.raises(InvalidRequest, match="cannot be copied or used as a source"):
        publish_encrypted_image_version(
            request(
                azure_block,
                setup,
                version="2.0.0",
                ensure_feature=False,
                source={"image_version_id": first.id},
            )
        )
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError, match="cannot be shared"):
        azure.compute().gallery_sharing_profile.begin_update(
            "rg-img",
            "gallery1",
            {"operationType": "Add", "groups": [{"type": "Subscriptions", "ids": ["x"]}]},
        ).result()


def test_vm_from_the_encrypted_version(
    azure_block: str, emulator: Emulator, setup: dict[str, str], azure: AzureClients
) -> None:
    from flows.virtual_machine import VmFromImageRequest, create_vm_from_encrypted_image

    version = publish_encrypted_image_version(request(azure_block, setup, ensure_feature=False))
    vm_request = VmFromImageRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-img",
        location="westeurope",
        vm_name="vm1",
        image_version_id=version.id,
        os_disk_encryption_set_id=setup["we_os"],
        data_disk_encryption_set_ids=[setup["we_data"], setup["we_os"]],
        ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB test",
    )
    vm = create_vm_from_encrypted_image(vm_request)
    assert vm.os_disk_encryption_set_id == setup["we_os"]
    assert vm.data_disk_encryption_set_ids == {0: setup["we_data"], 1: setup["we_os"]}
    disks = [r for r in emulator.arm.resources.values() if r["type"] == "Microsoft.Compute/disks"]
    assert sorted(d["properties"]["encryption"]["diskEncryptionSetId"] for d in disks) == sorted(
        [setup["we_os"], setup["we_data"], setup["we_os"]]
    )
    assert create_vm_from_encrypted_image(vm_request) == vm  # a re-run creates nothing
    assert len(emulator.requests.find("PUT", "virtualMachines/vm1$")) == 1
    # encryption at host: the subscription's feature registered first, then the VM with it
    emulator.arm.configure_feature("Microsoft.Compute", "EncryptionAtHost", polls=1)
    host = create_vm_from_encrypted_image(
        vm_request.model_copy(update={"vm_name": "vm3", "enable_encryption_at_host": True})
    )
    assert host.encryption_at_host and not vm.encryption_at_host
    assert emulator.arm.feature("Microsoft.Compute", "EncryptionAtHost").state == "Registered"
    stored = emulator.arm.get(host.id)
    assert stored is not None and stored["properties"]["securityProfile"]["encryptionAtHost"]
    with pytest.raises(InvalidRequest, match="one set per data disk"):
        create_vm_from_encrypted_image(
            vm_request.model_copy(
                update={"vm_name": "vm2", "data_disk_encryption_set_ids": [setup["we_os"]]}
            )
        )


def test_vm_outside_the_version_regions_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, setup: dict[str, str], azure: AzureClients
) -> None:
    from flows.virtual_machine import VmFromImageRequest, create_vm_from_encrypted_image

    version = publish_encrypted_image_version(request(azure_block, setup, ensure_feature=False))
    before = writes(emulator)
    vm = VmFromImageRequest(
        azure_credentials_block=azure_block,
        resource_group="rg-img",
        location="northeurope",
        vm_name="vm1",
        image_version_id=version.id,
        os_disk_encryption_set_id=setup["we_os"],
        data_disk_encryption_set_ids=[setup["we_data"], setup["we_data"]],
        ssh_public_key="ssh-ed25519 AAAA test",
    )
    message = refused(create_vm_from_encrypted_image, vm.model_dump(mode="json"))
    assert message == (
        "location = 'northeurope': the image version is replicated to ['westeurope', 'eastus'] only"
    )
    in_region = vm.model_dump(mode="json") | {"location": "eastus"}
    message = refused(create_vm_from_encrypted_image, in_region)
    assert message == (
        f"os_disk_encryption_set_id = {setup['we_os']!r}: "
        "the disk encryption set is in westeurope, not in eastus"
    )
    message = refused(create_vm_from_encrypted_image, in_region | {"location": "mars-north"})
    assert message.startswith("location = 'mars-north': not a region of this subscription")
    assert writes(emulator) == before


def test_pending_feature_stops_before_any_gallery_write(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    from tasks.registration import FeatureApprovalRequired

    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", behaviour="pending")
    with pytest.raises(FeatureApprovalRequired, match="needs manual approval"):
        publish_encrypted_image_version(request(azure_block, setup))
    assert not emulator.requests.find("PUT", "galleries")


UNENCRYPTED = [None, "", {}, {"data_disks": []}]


def test_unencrypted_requests_are_refused_before_any_write(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    since, before = time.time() - 1, writes(emulator)
    mine = f"byok-test-{uuid.uuid4().hex[:12]}"  # this test's runs and marker, on a shared server
    with tags(mine):
        for shape in UNENCRYPTED:
            region: dict[str, Any] = {"name": "westeurope"}
            if shape is not None:
                region["encryption"] = shape
            message = refused(
                publish_encrypted_image_version,
                request_json(azure_block, setup, target_regions=[region]),
            )
            assert message.startswith("request.target_regions[0].encryption = "), message
            assert "needs a disk encryption set (customer-managed key) for the OS disk" in message
    assert writes(emulator) == before
    emit_event(
        event="byok.test.marker",
        resource={"prefect.resource.id": "byok.test.marker"},
        related=[{"prefect.resource.id": f"prefect.tag.{mine}", "prefect.resource.role": "tag"}],
    )
    assert [e["event"] for e in byok_events(since, tag=mine)] == ["byok.test.marker"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"image_name": "../../x"},
            "request.image_name = '../../x': image definition names are 1-80 letters",
        ),
        ({"gallery_name": "g/x"}, "request.gallery_name = 'g/x': gallery names are 1-80"),
        ({"version": "1.0"}, "request.version = '1.0': image versions are major.minor.patch"),
        ({"poll_seconds": -1}, "request.poll_seconds = -1: Input should be greater than 0"),
        ({"location": "mars-north"}, "location = 'mars-north': not a region of this subscription"),
        (
            {"subscription_id": "00000000-0000-0000-0000-0000000000ff"},
            "subscription_id = '00000000-0000-0000-0000-0000000000ff': no such subscription",
        ),
    ],
)
def test_bad_requests_are_refused_naming_field_and_value(
    azure_block: str,
    emulator: Emulator,
    setup: dict[str, str],
    overrides: dict[str, Any],
    expected: str,
) -> None:
    before = writes(emulator)
    message = refused(
        publish_encrypted_image_version, request_json(azure_block, setup, **overrides)
    )
    assert message.startswith(expected), message
    assert writes(emulator) == before


def test_unknown_target_region_is_refused(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    regions = request_json(azure_block, setup)["target_regions"]
    regions[1]["name"] = "mars-north"
    message = refused(
        publish_encrypted_image_version, request_json(azure_block, setup, target_regions=regions)
    )
    assert message.startswith("target_regions[1].name = 'mars-north': not a region"), message


def test_resent_version_put_adopts_the_version_in_flight(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    emulator.state.image_versions.replication_seconds = 0.5
    emulator.faults.add(Fault("reset-after", method="PUT", path="versions/1.0.0$"))
    result = publish_encrypted_image_version(request(azure_block, setup, ensure_feature=False))
    assert {r.replication_state for r in result.regions} == {"Completed"}
    assert len(versions(emulator)) == 1
    assert len(emulator.requests.find("PUT", "versions/1.0.0$")) == 2  # the SDK re-sent it


def test_two_identical_runs_one_fails_fast(
    azure_block: str, emulator: Emulator, setup: dict[str, str]
) -> None:
    emulator.state.image_versions.replication_seconds = 3600.0  # the first run holds on…
    same = request(azure_block, setup, ensure_feature=False, replication_timeout_minutes=10)
    first: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: first.update(result=publish_encrypted_image_version(same))
    )
    thread.start()
    deadline = time.monotonic() + 300
    while not emulator.requests.find("PUT", "versions/1.0.0$") and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(ConcurrentRun, match=r"versions/1\.0\.0: another run is working on"):
        publish_encrypted_image_version(same)
    for operation in list(emulator.arm.operations.values()):  # …until the second has failed
        operation.ready_at = 0.0
    thread.join(timeout=300)
    assert {r.replication_state for r in first["result"].regions} == {"Completed"}
    assert len(versions(emulator)) == 1
    assert len(emulator.requests.find("PUT", "versions/1.0.0$")) == 1
