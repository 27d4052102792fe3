"""The SoftLayer API through the `softlayer` client: createFromIcos really checks the image,
the key and the authorization; template transactions; copyToIcos; ordering a server."""

from __future__ import annotations

import base64
import io
import os
import time
from typing import Any

import pytest
import SoftLayer
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from byok.vhd import encrypt_vhd, vhd_info
from clients.ibm import IBMClients
from emulator.server import Emulator
from emulator.services.softlayer.models import SEED_TEMPLATE_ID, seed_image
from emulator.services.softlayer.vhd import NotAVhd, key_matches, read_disk

TEMPLATES = "Virtual_Guest_Block_Device_Template_Group"
BUCKET = "byok-images"


def encrypted_vhd(dek: bytes) -> bytes:
    """A small tap-style encrypted VHD made from a synthetic fixed VHD."""
    out = io.BytesIO()
    encrypt_vhd(io.BytesIO(seed_image()), out, dek)
    return out.getvalue()


@pytest.fixture
def importer(
    emulator: Emulator, ibm: IBMClients, ibm_service_id: tuple[str, str], ibm_grant
) -> dict[str, Any]:
    """A regional bucket, a root key, and a service ID that may read the bucket: what an import
    needs apart from the image, the wrapped DEK and the server-protect authorization."""
    ibm.cos().create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    assert emulator.state is not None  # long enough to be seen running on a loaded machine
    emulator.state.softlayer.import_seconds = 1.0
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    root = kp.create_key("image-root")
    iam_id, api_key = ibm_service_id
    ibm_grant(iam_id, "cloud-object-storage", "Reader", resourceType="bucket", resource=BUCKET)
    return {"kp": kp, "root": root, "api_key": api_key}


def authorize_server_protect(emulator: Emulator, ibm_grant) -> None:
    """The `server-protect -> kms` Reader authorization."""
    instance = emulator.ibm_identity.key_protect_instance
    ibm_grant(None, "kms", "Reader", source="server-protect", serviceInstance=instance)


def start_import(ibm: IBMClients, importer: dict[str, Any], image: bytes, wrapped_dek: str) -> int:
    """Upload `image` and call createFromIcos; the template id."""
    ibm.cos().put_object(Bucket=BUCKET, Key="image.vhd", Body=image)
    template = ibm.softlayer().call(
        TEMPLATES,
        "createFromIcos",
        {
            "name": "byok-encrypted",
            "note": "test import",
            "operatingSystemReferenceCode": "UBUNTU_22_64",
            "uri": f"cos://us-south/{BUCKET}/image.vhd",
            "ibmApiKey": importer["api_key"],
            "crkCrn": importer["root"]["crn"],
            "wrappedDek": wrapped_dek,
            "isEncrypted": True,
            "cloudInit": True,
        },
    )
    return int(template["id"])


def wait_for_template(ibm: IBMClients, template_id: int) -> dict[str, Any]:
    """Poll getObject (mask children) until no child has a transaction."""
    client = ibm.softlayer()
    seen_transaction = False
    for _ in range(100):
        template = client.call(TEMPLATES, "getObject", id=template_id, mask="children")
        if not any(c.get("transactionId") for c in template["children"]):
            assert seen_transaction, "the transaction should take some time"
            return template
        seen_transaction = True
        time.sleep(0.05)
    raise AssertionError("the template transaction never finished")


def test_import_of_a_correctly_encrypted_vhd(
    emulator: Emulator, ibm: IBMClients, importer: dict[str, Any], ibm_grant
) -> None:
    authorize_server_protect(emulator, ibm_grant)
    dek = os.urandom(64)
    wrapped = importer["kp"].wrap(importer["root"]["id"], base64.b64encode(dek).decode())
    template = wait_for_template(
        ibm, start_import(ibm, importer, encrypted_vhd(dek), wrapped["ciphertext"])
    )
    assert template["status"]["keyName"] == "ACTIVE", template["note"]
    assert template["encryptionAttributes"] == ["ENCRYPTED"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong-dek", "does not match the image's keyhash"),
        (
            "no-authorization",
            "create the IAM authorization policy source serviceName=server-protect",
        ),
        ("not-encrypted", "is not an encrypted tap-style VHD"),
        ("not-a-vhd", "is not a VHD"),
    ],
)
def test_import_failures_are_reported_on_the_template(
    emulator: Emulator, ibm: IBMClients, importer: dict[str, Any], ibm_grant, case: str, reason: str
) -> None:
    if case != "no-authorization":
        authorize_server_protect(emulator, ibm_grant)
    dek = os.urandom(32)
    image = {"not-encrypted": seed_image(), "not-a-vhd": b"plain text, not a disk image" * 40}.get(
        case, encrypted_vhd(dek)
    )
    wrapped_dek = dek if case != "wrong-dek" else os.urandom(32)
    wrapped = importer["kp"].wrap(importer["root"]["id"], base64.b64encode(wrapped_dek).decode())
    template = wait_for_template(ibm, start_import(ibm, importer, image, wrapped["ciphertext"]))
    assert template["status"]["keyName"] == "IMPORT_FAILED"
    assert reason in template["note"]
    assert base64.b64encode(dek).decode() not in template["note"]


def test_bad_parameters_and_credentials_are_refused(
    ibm: IBMClients, ibm_credentials: IBMCloudCredentials
) -> None:
    with pytest.raises(SoftLayer.SoftLayerAPIError) as bad:
        ibm.softlayer().call(TEMPLATES, "createFromIcos", {"name": "x", "uri": "s3://b/o"})
    assert bad.value.faultCode == 400 and "operatingSystemReferenceCode" in bad.value.faultString
    wrong = IBMClients(ibm_credentials.model_copy(update={"api_key": SecretStr("nope")}))
    with pytest.raises(SoftLayer.SoftLayerAPIError) as denied:
        wrong.softlayer().call(TEMPLATES, "getObject", id=SEED_TEMPLATE_ID)
    assert denied.value.faultCode == 401


def test_copy_to_icos_exports_the_seeded_template(
    ibm: IBMClients, importer: dict[str, Any], ibm_grant, ibm_service_id: tuple[str, str]
) -> None:
    ibm_grant(ibm_service_id[0], "cloud-object-storage", "Writer", resource=BUCKET)
    assert ibm.softlayer().call(
        TEMPLATES,
        "copyToIcos",
        {"uri": f"cos://us-south/{BUCKET}/ubuntu.vhd", "ibmApiKey": importer["api_key"]},
        id=SEED_TEMPLATE_ID,
    )
    assert wait_for_template(ibm, SEED_TEMPLATE_ID)["status"]["keyName"] == "ACTIVE"
    body = ibm.cos().get_object(Bucket=BUCKET, Key="ubuntu-0.vhd")["Body"].read()
    assert vhd_info(io.BytesIO(body)).disk_type == "fixed"


def seed_order(client: SoftLayer.BaseClient) -> dict:
    """A virtual server order from the account's seeded template."""
    seed = client.call(TEMPLATES, "getObject", id=SEED_TEMPLATE_ID)
    return {
        "hostname": "byok-vsi",
        "domain": "example.com",
        "startCpus": 2,
        "maxMemory": 4096,
        "datacenter": {"name": "dal10"},
        "hourlyBillingFlag": True,
        "localDiskFlag": False,
        "blockDeviceTemplateGroup": {"globalIdentifier": seed["globalIdentifier"]},
    }


def test_order_a_server_from_a_template(ibm: IBMClients) -> None:
    client = ibm.softlayer()
    order = seed_order(client)
    seed = order["blockDeviceTemplateGroup"]
    dry_run = client.call("Virtual_Guest", "generateOrderTemplate", order)
    assert dry_run["imageTemplateGlobalIdentifier"] == seed["globalIdentifier"]
    guest = client.call("Virtual_Guest", "createObject", order)
    assert "provisionDate" not in guest
    deadline = time.monotonic() + 5
    while "provisionDate" not in client.call("Virtual_Guest", "getObject", id=guest["id"]):
        assert time.monotonic() < deadline, "never provisioned"
        time.sleep(0.05)
    with pytest.raises(SoftLayer.SoftLayerAPIError) as bad:
        client.call("Virtual_Guest", "createObject", {**order, "startCpus": 0})
    assert "startCpus 0" in bad.value.faultString
    with pytest.raises(SoftLayer.SoftLayerAPIError) as nowhere:
        client.call("Virtual_Guest", "createObject", {**order, "datacenter": {"name": "mars01"}})
    assert "datacenter.name 'mars01' is invalid" in nowhere.value.faultString


def test_the_lists_imports_and_orders_are_checked_against(ibm: IBMClients) -> None:
    client = ibm.softlayer()
    codes = client.call(TEMPLATES, "getVhdImportSoftwareDescriptions", mask="referenceCode")
    assert "UBUNTU_22_64" in {c["referenceCode"] for c in codes}
    centers = client.call("Location", "getDatacenters", mask="name")
    assert {"dal10", "fra02"} <= {c["name"] for c in centers}
    with pytest.raises(SoftLayer.SoftLayerAPIError) as bad:
        client.call(
            TEMPLATES,
            "createFromIcos",
            {"name": "x", "uri": "cos://us-south/b/o.vhd", "operatingSystemReferenceCode": "X"},
        )
    assert "operatingSystemReferenceCode 'X' is invalid" in bad.value.faultString


def test_the_emulator_reads_vhds_with_its_own_code() -> None:
    """The emulator's reader (not byok.vhd) against the product's encrypted output and the
    known answer of FACTS.md §3: SHA-256(32 zero bytes || key 0x00..0x3f) = dc7a4801…795c."""
    dek = bytes(range(64))
    disk = read_disk(io.BytesIO(encrypted_vhd(dek)))
    assert (disk.disk_type, disk.creator_app) == ("dynamic", "tap")
    assert disk.virtual_size == 4 * 1024 * 1024 and disk.nonce == bytes(32)
    assert disk.keyhash is not None and disk.keyhash.hex().startswith("dc7a4801")
    assert disk.keyhash.hex().endswith("795c")
    assert key_matches(disk, dek) and not key_matches(disk, os.urandom(64))
    seed = read_disk(io.BytesIO(seed_image()))
    assert (seed.disk_type, seed.keyhash) == ("fixed", None)
    assert vhd_info(io.BytesIO(seed_image())).disk_type == "fixed"  # byok.vhd agrees
    corrupt = bytearray(seed_image())
    corrupt[-512 + 50] ^= 1
    with pytest.raises(NotAVhd, match="bad footer checksum"):
        read_disk(io.BytesIO(bytes(corrupt)))


def test_an_image_of_a_disabled_root_key_cannot_be_ordered_until_enabled(
    emulator: Emulator, ibm: IBMClients, importer: dict[str, Any], ibm_grant
) -> None:
    """Disabling the root key makes the encrypted template unusable (the order is refused
    naming encryption_key_disabled); enabling it makes it orderable again."""
    authorize_server_protect(emulator, ibm_grant)
    dek = os.urandom(32)
    kp, root = importer["kp"], importer["root"]
    wrapped = kp.wrap(root["id"], base64.b64encode(dek).decode())["ciphertext"]
    template = wait_for_template(ibm, start_import(ibm, importer, encrypted_vhd(dek), wrapped))
    assert template["status"]["keyName"] == "ACTIVE", template["note"]
    order = {
        "hostname": "byok-vsi",
        "domain": "example.com",
        "startCpus": 2,
        "maxMemory": 4096,
        "datacenter": {"name": "dal10"},
        "hourlyBillingFlag": True,
        "localDiskFlag": False,
        "blockDeviceTemplateGroup": {"globalIdentifier": template["globalIdentifier"]},
    }
    client = ibm.softlayer()
    kp._call("POST", f"/api/v2/keys/{root['id']}/actions/disable")
    with pytest.raises(SoftLayer.SoftLayerAPIError, match="encryption_key_disabled"):
        client.call("Virtual_Guest", "generateOrderTemplate", order)
    kp._call("POST", f"/api/v2/keys/{root['id']}/actions/enable")
    assert client.call("Virtual_Guest", "generateOrderTemplate", order)
