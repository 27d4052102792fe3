"""The VPC encrypted image flow end to end against the emulator (IAM, Key Protect, moto COS,
VPC) through the real SDKs and the real qemu-img: the final state, a re-run reusing it, bad
input refused before any write, re-runs after a crash at each write, and the passphrase in no
log, artifact, result, stored file or temp file."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

from byok.errors import InvalidRequest
from byok.ibm_vpc import VpcImageRequest, VpcInstanceSpec, VpcRotationRequest
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.softlayer.models import SEED_TEMPLATE_ID, seed_image
from emulator.services.vpc.models import VpcModel
from emulator.state import EmulatorState
from flows.ibm_vpc_image import provision_encrypted_vpc_image, rotate_vpc_root_key_flow
from tests.helpers import run_records


def state(emulator: Emulator) -> EmulatorState:
    """The emulator's current state."""
    assert emulator.state is not None
    return emulator.state


BUCKET = "byok-vpc"
IMAGE = "byok-ubuntu-vpc"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
SPOOL_PREFIXES = ("byok-luks-", "byok-vpc-")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small raw disk with some data in it."""
    path = tmp_path_factory.mktemp("vpc-source") / "disk.raw"
    path.write_bytes(os.urandom(128 * 1024) + bytes(896 * 1024))
    return path


@pytest.fixture
def vpc(emulator: Emulator, ibm_block: str) -> VpcModel:
    """The emulator's VPC, with quick imports and boots."""
    model = state(emulator).vpc
    model.import_seconds = model.boot_seconds = 0.05
    return model


def request(block: str, emulator: Emulator, source: Path, **overrides: Any) -> VpcImageRequest:
    ibm = emulator.ibm_identity
    values: dict[str, Any] = {
        "ibm_credentials_block": block,
        "key_protect_instance_id": ibm.key_protect_instance,
        "root_key": "vpc-root",
        "cos_instance_id": ibm.cos_instance,
        "bucket": BUCKET,
        "object_key": f"{IMAGE}.qcow2",
        "source_file": str(source),
        "image_name": IMAGE,
        "operating_system": "ubuntu-22-04-amd64",
        "instance": VpcInstanceSpec(
            name="byok-vsi", zone="us-south-1", vpc_name="byok-vpc", subnet_name="byok-subnet"
        ),
        "luks_iter_time_ms": 10,
        "timeout_minutes": 0.5,
        "poll_seconds": 0.05,
    }
    values.update(overrides)
    return VpcImageRequest(**values)


def writes(emulator: Emulator) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()
        if r.method in WRITES and r.path != "/identity/token"
    ]


def spool_files() -> list[str]:
    return [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(SPOOL_PREFIXES)]


def counts(emulator: Emulator, vpc: VpcModel) -> dict[str, int]:
    kp = state(emulator).keyprotect.instances[emulator.ibm_identity.key_protect_instance]
    return {
        "keys": len(kp.keys),
        "images": len(vpc.images),
        "instances": len(vpc.instances),
        "vpcs": len(vpc.vpcs),
        "subnets": len(vpc.subnets),
        "authorizations": sum(
            p.type == "authorization" for p in state(emulator).iam.policies.values()
        ),
    }


def passphrase_of(emulator: Emulator, ibm: IBMClients, vpc: VpcModel, image_id: str) -> str:
    """What the image's encrypted_data_key unwraps to (base64 of the passphrase)."""
    body = vpc.images[image_id].body
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    key_id = body["encryption_key"]["crn"].rsplit(":", 1)[-1]
    return base64.b64decode(kp.unwrap(key_id, body["encrypted_data_key"])["plaintext"]).decode()


def decrypted(ibm: IBMClients, passphrase: str) -> bytes:
    """The uploaded encrypted image's disk, opened by qemu-img with the passphrase."""
    with tempfile.TemporaryDirectory() as scratch:
        encrypted, raw = Path(scratch) / "o.qcow2", Path(scratch) / "o.raw"
        ibm.cos().download_file(BUCKET, f"{IMAGE}.qcow2", str(encrypted))
        secret = Path(scratch) / "p"
        secret.write_text(passphrase)
        subprocess.run(
            ["qemu-img", "convert", "--object", f"secret,id=s,file={secret}", "--image-opts",
             f"driver=qcow2,file.filename={encrypted},encrypt.key-secret=s", "-O", "raw",
             str(raw)],
            check=True, capture_output=True,
        )  # fmt: skip
        return raw.read_bytes()


def make_bucket(ibm: IBMClients) -> None:
    ibm.cos().create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )


def test_image_and_instance_end_to_end_and_no_passphrase_anywhere(
    ibm_block: str,
    emulator: Emulator,
    ibm: IBMClients,
    vpc: VpcModel,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One run makes the key, the authorizations, the bucket, an available image registered
    with the key, and a running instance; the uploaded object is a LUKS qcow2 that opens with
    the unwrapped passphrase and matches the source; the passphrase is in no Prefect record,
    stored result, result or temp file; a re-run reuses everything."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)
        logger.setLevel(logging.INFO)
    before = spool_files()
    run = provision_encrypted_vpc_image(request(ibm_block, emulator, source), return_state=True)
    result = run.result()
    assert result.image_status == "available" and result.instance_status == "running"
    assert counts(emulator, vpc) == {
        "keys": 1, "images": 1, "instances": 1, "vpcs": 1, "subnets": 1, "authorizations": 2,
    }  # fmt: skip
    registrations = state(emulator).keyprotect.registrations
    assert list(registrations) == [result.image_crn]
    passphrase = passphrase_of(emulator, ibm, vpc, result.image_id)
    assert len(passphrase) == 44

    # the object really is the source under LUKS with this passphrase
    with tempfile.TemporaryDirectory() as scratch:
        encrypted = Path(scratch) / "o.qcow2"
        ibm.cos().download_file(BUCKET, f"{IMAGE}.qcow2", str(encrypted))
        secret = Path(scratch) / "p"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, passphrase.encode())
        os.close(fd)
        compared = subprocess.run(
            ["qemu-img", "compare", "--object", f"secret,id=s,file={secret}", "--image-opts",
             f"driver=raw,file.filename={source}",
             f"driver=qcow2,file.filename={encrypted},encrypt.key-secret=s"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert compared.returncode == 0, compared.stderr

    def found(records: list[str]) -> bool:
        return any("Encrypted IBM Cloud VPC image" in r for r in records) and any(
            "Wrapped the LUKS passphrase" in r for r in records
        )

    APILogWorker.drain_all(timeout=10)
    records = run_records(run.state_details.flow_run_id)
    deadline = time.monotonic() + 20  # logs reach the API in the background
    while not found(records) and time.monotonic() < deadline:
        time.sleep(0.5)
        records = run_records(run.state_details.flow_run_id)
    assert found(records), "the summary artifact and the INFO logs reached the API"
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    stored = [p.read_bytes() for p in storage.rglob("*") if p.is_file()] if storage.exists() else []
    for secret_text in (passphrase, base64.b64encode(passphrase.encode()).decode()):
        assert not [r for r in records if secret_text in r]
        assert not [s for s in stored if secret_text.encode() in s]
        assert secret_text not in result.model_dump_json()
    assert spool_files() == before

    emulator.requests.clear()
    again = provision_encrypted_vpc_image(request(ibm_block, emulator, source))
    assert again.created == [] and again.image_id == result.image_id
    assert again.instance_id == result.instance_id
    assert writes(emulator) == []


def test_a_cos_object_source_is_spooled_and_a_crash_leaves_no_spool(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, vpc: VpcModel, source: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A qcow2 object in the bucket is downloaded into the spool and encrypted; a crash at
    the upload (after the download) leaves no spooled file, and the re-run makes one image of
    the object's disk."""
    plain = tmp_path / "source.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(source), str(plain)], check=True)
    make_bucket(ibm)
    ibm.cos().upload_file(str(plain), BUCKET, "source.qcow2")
    spool = tmp_path / "spool"
    spool.mkdir()
    cos_source = {"source_file": None, "source_object": "source.qcow2", "instance": None,
                  "spool_dir": str(spool)}  # fmt: skip
    emulator.faults.add(
        Fault("status", method="PUT", path=rf"^/{BUCKET}/{IMAGE}\.qcow2$", status=400,
              code="InjectedCrash")
    )  # fmt: skip
    with pytest.raises(Exception, match="InjectedCrash"):
        provision_encrypted_vpc_image(request(ibm_block, emulator, source, **cos_source))
    assert list(spool.iterdir()) == [] and vpc.images == {}
    result = provision_encrypted_vpc_image(request(ibm_block, emulator, source, **cos_source))
    assert result.image_status == "available" and len(vpc.images) == 1
    assert list(spool.iterdir()) == []
    assert decrypted(ibm, passphrase_of(emulator, ibm, vpc, result.image_id)) == (
        source.read_bytes()
    )


def test_a_classic_template_source_is_exported_once_across_a_crash(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, vpc: VpcModel, source: Path
) -> None:
    """The template is exported to the bucket as the classic procedure does; the export's
    answer is lost and the run crashes reading the export: the re-run neither exports again
    nor makes a second image, and the image holds the template's whole disk (a fixed VHD,
    read at its footer's size)."""
    assert emulator.state is not None
    emulator.state.softlayer.export_seconds = 0.05
    template = {"source_file": None, "source_template_id": SEED_TEMPLATE_ID, "instance": None}
    emulator.faults.add(Fault("reset-after", method="POST", path=r"/copyToIcos", count=None))
    emulator.faults.add(Fault("status", method="GET", path=rf"^/{BUCKET}/exports/", status=403,
                              code="InjectedCrash", count=None))  # fmt: skip
    with pytest.raises(Exception, match="InjectedCrash"):
        provision_encrypted_vpc_image(request(ibm_block, emulator, source, **template))
    emulator.faults.clear()
    result = provision_encrypted_vpc_image(request(ibm_block, emulator, source, **template))
    exports = [r for r in emulator.requests.find() if "/copyToIcos" in r.path]
    assert len(exports) == 1 and len(vpc.images) == 1
    assert result.image_status == "available"
    disk = seed_image()[:-512]  # a fixed VHD: the disk, then the footer
    assert decrypted(ibm, passphrase_of(emulator, ibm, vpc, result.image_id)) == disk


def test_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one of source_file, source_object"):
        VpcImageRequest(
            key_protect_instance_id="k", root_key="r", cos_instance_id="c", bucket="b",
            object_key="o.qcow2", image_name="i", operating_system="o",
            source_file="disk.raw", source_object="disk.qcow2",
        )  # fmt: skip


@pytest.fixture
def secret_blocks(ibm_block: str) -> None:
    Secret(value="too-short").save("vpc-short-passphrase", overwrite=True)


METAL = VpcInstanceSpec(
    name="m", profile="bx2-metal-96x384", zone="us-south-1", vpc_name="v", subnet_name="s"
)
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("os", {"operating_system": "windows-3-11"}, "operating_system = 'windows-3-11'"),
    (
        "region",
        {"root_key": "crn:v1:bluemix:public:kms:eu-de:a/x:y:key:z"},
        "must be in the key's region",
    ),
    ("short passphrase", {"passphrase_block": "vpc-short-passphrase"}, "at least 16"),
    ("name", {"image_name": "Bad_Name"}, "image_name = 'Bad_Name'"),
    ("too big", {"source_file": "BIG"}, "exceeds VPC's 250 GB"),
    ("standard key", {"root_key": "standard"}, "root_key = 'standard'"),
    (
        "no object",
        {"source_file": None, "source_object": "missing.raw"},
        "source_object = 'missing.raw': no such object",
    ),
    ("object too big", {"source_file": None, "source_object": "BIG"}, "exceeds VPC's 250 GB"),
    (
        "no template",
        {"source_file": None, "source_template_id": 42},
        "source_template_id = 42: no such image template",
    ),
    ("spool", {"spool_limit_gb": 0.001}, "spool_limit_gb = 0.001: the source needs about"),
    (
        "bare metal",
        {"instance": METAL},
        "instance.profile = 'bx2-metal-96x384': a bare metal profile",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_any_write(
    ibm_block: str,
    emulator: Emulator,
    ibm: IBMClients,
    vpc: VpcModel,
    source: Path,
    secret_blocks: None,
    tmp_path: Path,
    overrides: dict[str, Any],
    message: str,
) -> None:
    big = tmp_path / "big.qcow2"
    if "BIG" in overrides.values():
        subprocess.run(["qemu-img", "create", "-f", "qcow2", str(big), "300G"], check=True)
    if overrides.get("source_file") == "BIG":
        overrides = {"source_file": str(big)}
    if overrides.get("source_object") == "BIG":
        make_bucket(ibm)
        ibm.cos().upload_file(str(big), BUCKET, "big.qcow2")
        overrides = {**overrides, "source_object": "big.qcow2"}
    if overrides.get("root_key") == "standard":
        kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
        kp.create_key("standard", extractable=True)
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match=message):
        provision_encrypted_vpc_image(request(ibm_block, emulator, source, **overrides))
    assert writes(emulator) == []


# A write whose answer is lost on every try (found by name, not re-sent), then a crash at the
# next request (refused): the run fails after the write happened.
CRASHES = [
    pytest.param("POST", r"^/api/v2/keys$", r"^/api/v2/keys/[^/]+/actions/wrap$", id="root key",
                 marks=pytest.mark.slow),
    pytest.param("POST", r"^/v1/images$", r"^/v1/images/[^/]+$", id="image"),
    pytest.param("POST", r"^/v1/instances$", r"^/v1/instances/[^/]+$", id="instance",
                 marks=pytest.mark.slow),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "next_path"), CRASHES)
def test_a_crash_after_each_write_then_a_rerun_makes_one_of_each(
    ibm_block: str,
    emulator: Emulator,
    vpc: VpcModel,
    source: Path,
    method: str,
    path: str,
    next_path: str,
) -> None:
    """The run crashes right after the write (whose answer was lost): the re-run completes
    with one key, image and instance, and no spool or passphrase file is ever left."""
    before = spool_files()
    emulator.faults.add(Fault("reset-after", method=method, path=path, count=None))
    emulator.faults.add(Fault("status", path=next_path, status=403, count=None))
    with pytest.raises(Exception, match="403"):
        provision_encrypted_vpc_image(request(ibm_block, emulator, source))
    assert spool_files() == before
    emulator.faults.clear()
    result = provision_encrypted_vpc_image(request(ibm_block, emulator, source))
    assert result.instance_status == "running"
    assert counts(emulator, vpc) == {
        "keys": 1, "images": 1, "instances": 1, "vpcs": 1, "subnets": 1, "authorizations": 2,
    }  # fmt: skip
    assert spool_files() == before


@pytest.mark.slow
def test_rotation_is_rewrapped_by_vpc_and_refused_within_the_hour(
    ibm_block: str, emulator: Emulator, vpc: VpcModel, source: Path
) -> None:
    """After a rotation every registered image reports the new key version and stays
    available; a rotation for a later day within the hour is refused before any write."""
    made = provision_encrypted_vpc_image(request(ibm_block, emulator, source, instance=None))
    rotation = VpcRotationRequest(
        ibm_credentials_block=ibm_block,
        key_protect_instance_id=emulator.ibm_identity.key_protect_instance,
        root_key="vpc-root",
        timeout_minutes=0.2,
        poll_seconds=0.05,
    )
    result = rotate_vpc_root_key_flow(rotation)
    kp = state(emulator).keyprotect.instances[emulator.ibm_identity.key_protect_instance]
    key = next(iter(kp.keys.values()))
    assert len(key.versions) == 2 and result.key_version == key.latest.id
    assert result.previous_version == made.key_version != result.key_version
    assert [(i.resource_crn, i.key_version, i.status) for i in result.images] == [
        (made.image_crn, key.latest.id, "available")
    ]
    emulator.requests.clear()
    tomorrow = f"vpc-{datetime.now(UTC) + timedelta(days=1):%Y%m%d}"
    with pytest.raises(InvalidRequest, match="one rotation per hour"):
        rotate_vpc_root_key_flow(rotation.model_copy(update={"rotation_id": tomorrow}))
    assert writes(emulator) == [] and len(key.versions) == 2
