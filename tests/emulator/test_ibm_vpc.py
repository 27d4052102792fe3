"""The emulator's VPC API through the real `ibm-vpc` SDK: catalog, VPCs, subnets, image import
(really opened with qemu-img under the unwrapped passphrase), Key Protect registrations, key
disable → `unusable`, instances, and IBM's error shapes."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from ibm_cloud_sdk_core import ApiException
from ibm_vpc.vpc_v1 import Image

from byok.ibm_vpc_qemu import encrypt_to_qcow2
from clients.ibm import IBMClients
from emulator.server import Emulator
from emulator.state import EmulatorState


def state(emulator: Emulator) -> EmulatorState:
    """The emulator's current state."""
    assert emulator.state is not None
    return emulator.state


BUCKET = "byok-vpc-images"
PASSPHRASE = b"correct horse battery staple 0123"


@pytest.fixture(scope="module")
def qcow2_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A small raw disk encrypted to qcow2+LUKS under PASSPHRASE and under another one."""
    root = tmp_path_factory.mktemp("vpc-images")
    raw = root / "disk.raw"
    raw.write_bytes(os.urandom(64 * 1024) + bytes(1024 * 1024))
    images = {}
    for name, passphrase in (("good", PASSPHRASE), ("other", b"another passphrase 0123456789")):
        target = root / f"{name}.qcow2"
        encrypt_to_qcow2(raw, target, passphrase, "raw", iter_time_ms=10)
        images[name] = target.read_bytes()
    return images


@pytest.fixture
def setup(emulator: Emulator, ibm: IBMClients, ibm_grant) -> dict[str, Any]:
    """A regional bucket, a root key, the passphrase wrapped, and both authorizations."""
    ibm.cos().create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    instance = emulator.ibm_identity.key_protect_instance
    kp = ibm.key_protect(instance)
    root = kp.create_key("vpc-root")
    wrapped = kp.wrap(root["id"], base64.b64encode(PASSPHRASE).decode())["ciphertext"]
    ibm_grant(None, "kms", "Reader", source="server-protect", serviceInstance=instance)
    ibm_grant(None, "cloud-object-storage", "Reader", source="is")
    return {"kp": kp, "root": root, "wrapped": wrapped, "vpc": ibm.vpc()}


def _import(setup: dict[str, Any], ibm: IBMClients, body: bytes, name: str) -> dict[str, Any]:
    ibm.cos().put_object(Bucket=BUCKET, Key=f"{name}.qcow2", Body=body)
    return (
        setup["vpc"]
        .create_image(
            image_prototype={
                "name": name,
                "file": {"href": f"cos://us-south/{BUCKET}/{name}.qcow2"},
                "operating_system": {"name": "ubuntu-22-04-amd64"},
                "encrypted_data_key": setup["wrapped"],
                "encryption_key": {"crn": setup["root"]["crn"]},
            }
        )
        .get_result()
    )


def _settled(client: Any, image_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        image = client.get_image(id=image_id).get_result()
        if image["status"] != "pending" or time.monotonic() > deadline:
            return image
        time.sleep(0.1)


def bare_metal_server(image_id: str, subnet_id: str) -> dict[str, Any]:
    """A bare metal server prototype booting `image_id`."""
    return {
        "initialization": {"image": {"id": image_id}, "keys": []},
        "primary_network_interface": {"subnet": {"id": subnet_id}},
        "profile": {"name": "bx2-metal-96x384"},
        "zone": {"name": "us-south-1"},
        "name": "byok-metal",
    }


def test_encrypted_import_lifecycle(
    emulator: Emulator, ibm: IBMClients, setup: dict[str, Any], qcow2_images: dict[str, bytes]
) -> None:
    """Import → available (the SDK's Image model parses it), registered with the root key,
    `unusable` with encryption_key_disabled while the key is disabled, an instance runs from
    it; a passphrase the wrapped key does not unwrap to makes the import `failed` with
    encrypted_data_key_invalid (status reason codes: ibm-vpc's ImageStatusReason)."""
    client = setup["vpc"]
    created = _import(setup, ibm, qcow2_images["good"], "byok-good")
    assert created["status"] == "pending"
    assert [r["code"] for r in created["status_reasons"]] == ["image_request_in_progress"]
    image = _settled(client, created["id"])
    assert image["status"] == "available", image["status_reasons"]
    assert image["encryption"] == "user_managed"
    Image.from_dict(image)
    registrations = setup["kp"]._call("GET", f"/api/v2/keys/{setup['root']['id']}/registrations")[
        "resources"
    ]
    assert [r["resourceCrn"] for r in registrations] == [image["crn"]]

    vpc = client.create_vpc(name="byok-vpc").get_result()
    subnet = client.create_subnet(
        subnet_prototype={
            "name": "byok-subnet",
            "vpc": {"id": vpc["id"]},
            "zone": {"name": "us-south-1"},
            "total_ipv4_address_count": 256,
        }
    ).get_result()
    prototype = {
        "name": "byok-vsi",
        "profile": {"name": "bx2-2x8"},
        "vpc": {"id": vpc["id"]},
        "zone": {"name": "us-south-1"},
        "image": {"id": image["id"]},
        "primary_network_interface": {"subnet": {"id": subnet["id"]}},
    }
    assert image["allowed_use"]["bare_metal_server"] == "false"
    with pytest.raises(ApiException) as bare_metal:
        client.create_bare_metal_server(bare_metal_server(image["id"], subnet["id"]))
    assert bare_metal.value.status_code == 400
    assert "cannot be used with a bare metal profile" in bare_metal.value.message
    instance = client.create_instance(instance_prototype=prototype).get_result()
    assert instance["status"] == "pending"
    time.sleep(0.6)
    assert client.get_instance(id=instance["id"]).get_result()["status"] == "running"

    kp_model = state(emulator).keyprotect
    key = kp_model.instances[emulator.ibm_identity.key_protect_instance].keys[setup["root"]["id"]]
    kp_model.set_enabled(key, False)
    unusable = client.get_image(id=image["id"]).get_result()
    assert unusable["status"] == "unusable"
    assert [r["code"] for r in unusable["status_reasons"]] == ["encryption_key_disabled"]
    with pytest.raises(ApiException) as refused:
        client.create_instance(instance_prototype={**prototype, "name": "byok-vsi-2"})
    assert "encryption_key_disabled" in refused.value.message
    assert client.get_instance(id=instance["id"]).get_result()["status"] == "running"
    reboot = client.create_instance_action(instance_id=instance["id"], type="reboot")
    assert (reboot.get_status_code(), reboot.get_result()["status"]) == (201, "failed")
    stopped = client.get_instance(id=instance["id"]).get_result()
    assert stopped["status"] == "stopped"  # it cannot start again while its key is disabled
    assert [r["code"] for r in stopped["status_reasons"]] == ["cannot_start_storage"]
    kp_model.set_enabled(key, True)
    assert client.get_image(id=image["id"]).get_result()["status"] == "available"
    started = client.create_instance_action(instance_id=instance["id"], type="start")
    assert started.get_result()["status"] == "completed"
    assert client.get_instance(id=instance["id"]).get_result()["status_reasons"] == []

    wrong = _settled(client, _import(setup, ibm, qcow2_images["other"], "byok-other")["id"])
    assert wrong["status"] == "failed"
    assert wrong["status_reasons"][0]["code"] == "encrypted_data_key_invalid"
    assert "cannot unlock any keyslot" in wrong["status_reasons"][0]["message"]
    junk = _settled(client, _import(setup, ibm, bytes(64 * 1024), "byok-junk")["id"])
    assert (junk["status"], junk["status_reasons"][0]["code"]) == ("failed", "image_data_corrupted")
    listed = client.list_images(name="byok-good").get_result()["images"]
    assert [i["id"] for i in listed] == [image["id"]]


def test_errors_in_ibm_shape(
    emulator: Emulator, ibm: IBMClients, setup: dict[str, Any], qcow2_images: dict[str, bytes]
) -> None:
    """Unknown OS, a duplicate name and a missing image answer IBM's error shape; the
    catalog lists operating systems and profiles; an unauthorized COS read fails the import."""
    client = setup["vpc"]
    names = [o["name"] for o in client.list_operating_systems().get_result()["operating_systems"]]
    assert "ubuntu-22-04-amd64" in names
    profiles = client.list_instance_profiles().get_result()["profiles"]
    assert "bx2-2x8" in [p["name"] for p in profiles]
    metal = client.list_bare_metal_server_profiles().get_result()
    assert [p["name"] for p in metal["profiles"]] == ["bx2-metal-96x384", "cx2-metal-96x192"]
    assert metal["total_count"] == 2
    with pytest.raises(ApiException) as bad_os:
        client.create_image(
            image_prototype={
                "name": "x",
                "file": {"href": f"cos://us-south/{BUCKET}/x.qcow2"},
                "operating_system": {"name": "windows-3-11"},
            }
        )
    assert bad_os.value.status_code == 400
    assert bad_os.value.http_response.json()["errors"][0]["code"] == "bad_field"
    with pytest.raises(ApiException) as missing:
        client.get_image(id="r006-nope")
    assert missing.value.status_code == 404
    client.create_vpc(name="dup")
    with pytest.raises(ApiException) as duplicate:
        client.create_vpc(name="dup")
    assert duplicate.value.status_code == 400  # as IBM answers it, not 409
    (error,) = duplicate.value.http_response.json()["errors"]
    assert (error["code"], error["message"]) == (
        "validation_unique_failed",
        "Provided Name (dup) is not unique",
    )
    assert error["target"] == {"name": "name", "type": "field", "value": "dup"}
    model = state(emulator).vpc
    assert model.images == {}  # nothing was created by the refused calls


def test_unencrypted_path_and_delete(
    ibm: IBMClients, setup: dict[str, Any], tmp_path: Path
) -> None:
    """A plain qcow2 imports without a key; deleting an image removes it."""
    raw = tmp_path / "d.raw"
    raw.write_bytes(bytes(1024 * 1024))
    plain = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(plain)], check=True)
    ibm.cos().put_object(Bucket=BUCKET, Key="plain.qcow2", Body=plain.read_bytes())
    client = setup["vpc"]
    created = client.create_image(
        image_prototype={
            "name": "plain",
            "file": {"href": f"cos://us-south/{BUCKET}/plain.qcow2"},
            "operating_system": {"name": "debian-12-amd64"},
        }
    ).get_result()
    assert _settled(client, created["id"])["status"] == "available"
    vpc = client.create_vpc(name="plain-vpc").get_result()
    subnet = client.create_subnet(
        subnet_prototype={"name": "plain-subnet", "vpc": {"id": vpc["id"]},
                          "zone": {"name": "us-south-1"}, "total_ipv4_address_count": 256}
    ).get_result()  # fmt: skip
    server = client.create_bare_metal_server(bare_metal_server(created["id"], subnet["id"]))
    assert server.get_result()["status"] == "running"
    client.delete_image(id=created["id"])
    assert client.list_images().get_result()["images"] == []
