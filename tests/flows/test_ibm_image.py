"""The encrypted IBM image flow end to end against the emulator (IAM, Key Protect, SoftLayer,
moto COS) through the real clients: final state, rules refused before any write, re-runs
after a crash at each step, throttling absorbed, and no secret in Prefect's records."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import IbmImageRequest, VirtualServerOrder
from byok.validation import InvalidRequest
from byok.vhd import decrypt_vhd, encrypt_vhd, keyhash, verify_vhd
from byok.vhd.format import BAT_OFFSET, BLOCK_SIZE, TYPE_DYNAMIC, DynamicHeader, Footer
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.softlayer.models import SEED_TEMPLATE_ID, seed_image
from flows.ibm_image import provision_encrypted_ibm_image
from tasks.ibm_validation import validate_image_request
from tests.helpers import run_records

BUCKET = "byok-images"
IMAGE = "byok-ubuntu-encrypted"
OBJECT = f"{IMAGE}.vhd"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(autouse=True)
def quick_softlayer(ibm_block: str, emulator: Emulator) -> None:
    """Exports, imports and provisioning take 50 ms here."""
    assert emulator.state is not None
    softlayer = emulator.state.softlayer
    softlayer.import_seconds = softlayer.export_seconds = softlayer.provision_seconds = 0.05


def request(block: str, emulator: Emulator, **overrides: Any) -> IbmImageRequest:
    ibm = emulator.ibm_identity
    values: dict[str, Any] = {
        "ibm_credentials_block": block,
        "key_protect_instance_id": ibm.key_protect_instance,
        "root_key": "image-root",
        "cos_instance_id": ibm.cos_instance,
        "bucket": BUCKET,
        "source_template_id": SEED_TEMPLATE_ID,
        "image_name": IMAGE,
        "os_reference_code": "UBUNTU_22_64",
        "order": VirtualServerOrder(hostname="vsi1", domain="example.com", datacenter="dal10"),
        "timeout_minutes": 0.5,
        "poll_seconds": 0.05,
    }
    values.update(overrides)
    return IbmImageRequest(**values)


def writes(emulator: Emulator) -> list[str]:
    """Every write the flow sent to the emulator or COS (IAM token requests excluded)."""
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()
        if r.method in WRITES and r.path != "/identity/token"
    ]


def dynamic_vhd(data: bytes) -> bytes:
    """A plain (unencrypted) dynamic VHD holding `data`."""
    encrypted, plain, dek = io.BytesIO(), io.BytesIO(), os.urandom(64)
    raw = data + Footer(2, len(data), len(data), creator_app=b"test").pack()
    encrypt_vhd(io.BytesIO(raw), encrypted, dek)
    decrypt_vhd(io.BytesIO(encrypted.getvalue()), plain, dek)
    return plain.getvalue()


def huge_vhd(size: int) -> bytes:
    """An empty dynamic VHD with a virtual size of `size` bytes (no block allocated)."""
    entries = -(-size // BLOCK_SIZE)
    bat = b"\xff" * (-(-entries * 4 // 512) * 512)
    footer = Footer(TYPE_DYNAMIC, size, size, data_offset=512, creator_app=b"test").pack()
    return footer + DynamicHeader(BAT_OFFSET, entries).pack() + bat + footer


def state_counts(emulator: Emulator, ibm: IBMClients) -> dict[str, int]:
    """How many of each resource the flow makes exist in the emulator."""
    state = emulator.state
    assert state is not None
    s3 = ibm.cos()
    objects = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {
        "templates": sum(t.name == IMAGE for t in state.softlayer.templates.values()),
        "root keys": sum(
            k.name == "image-root"
            for i in state.keyprotect.instances.values()
            for k in i.keys.values()
        ),
        "authorizations": sum(p.type == "authorization" for p in state.iam.policies.values()),
        "service ids": len(state.iam.service_ids),
        "service policies": sum(
            p.subject.get("iam_id", "").startswith("iam-ServiceId")
            for p in state.iam.policies.values()
        ),
        "import api keys": sum(k.name == f"{IMAGE}-import" for k in state.iam.api_keys.values()),
        "encrypted objects": sum(o["Key"] == OBJECT for o in objects),
        "multipart uploads": len(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])),
        "guests": len(state.softlayer.guests),
    }


EXPECTED = {
    "templates": 1,
    "root keys": 1,
    "authorizations": 1,
    "service ids": 1,
    "service policies": 2,
    "import api keys": 0,
    "encrypted objects": 1,
    "multipart uploads": 0,
    "guests": 1,
}


def test_template_source_end_to_end(ibm_block: str, emulator: Emulator, ibm: IBMClients) -> None:
    result = provision_encrypted_ibm_image(request(ibm_block, emulator))
    state = emulator.state
    assert state is not None
    template = state.softlayer.templates[result.template_id]
    assert template.status == "ACTIVE" and template.encrypted, template.note
    assert template.image == (BUCKET, OBJECT)  # the import settled: keyhash matched the DEK
    assert template.global_identifier == result.template_global_identifier
    assert result.object_uri == f"cos://us-south/{BUCKET}/{OBJECT}"
    assert state_counts(emulator, ibm) == EXPECTED
    guest = state.softlayer.guests[result.instance.id if result.instance else 0]
    assert guest.provisioned and guest.order["blockDeviceTemplateGroup"] == {
        "globalIdentifier": result.template_global_identifier
    }
    authorization = next(p for p in state.iam.policies.values() if p.type == "authorization")
    assert authorization.subject["serviceName"] == "server-protect"
    assert authorization.resource["serviceName"] == "kms" and authorization.role_names == {"Reader"}
    # the stored image decrypts to the exported template with the DEK Key Protect unwraps
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    dek = base64.b64decode(kp.unwrap(result.root_key_id, str(result.wrapped_dek))["plaintext"])
    assert len(dek) == 64 and keyhash(dek).hex() == result.keyhash
    stored = ibm.cos().get_object(Bucket=BUCKET, Key=OBJECT)["Body"].read()
    verify_vhd(io.BytesIO(seed_image()), io.BytesIO(stored), dek)


def test_rerun_reuses_everything(ibm_block: str, emulator: Emulator, ibm: IBMClients) -> None:
    first = provision_encrypted_ibm_image(request(ibm_block, emulator))
    emulator.requests.clear()
    second = provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert (second.template_id, second.instance) == (first.template_id, first.instance)
    assert second.wrapped_dek == first.wrapped_dek and second.keyhash == first.keyhash
    assert writes(emulator) == []
    assert state_counts(emulator, ibm) == EXPECTED


def test_vhd_object_source_streams_in_parts_with_own_dek(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    data = os.urandom(11 * 1024 * 1024)
    s3.put_object(Bucket=BUCKET, Key="source.vhd", Body=dynamic_vhd(data))
    dek = os.urandom(32)
    Secret(value=base64.b64encode(dek).decode()).save("ibm-test-dek", overwrite=True)
    result = provision_encrypted_ibm_image(
        request(
            ibm_block,
            emulator,
            source_template_id=None,
            source_object="source.vhd",
            dek_secret_block="ibm-test-dek",
            order=None,
            multipart_threshold_mb=5,
            part_size_mb=5,
        )
    )
    assert result.keyhash == keyhash(dek).hex() and result.instance is None
    parts = [
        r for r in emulator.requests.find("PUT", origin="cos") if r.path == f"/{BUCKET}/{OBJECT}"
    ]
    assert len(parts) == 3  # 11 MiB + metadata in 5 MiB parts
    stored = s3.get_object(Bucket=BUCKET, Key=OBJECT)["Body"].read()
    verify_vhd(io.BytesIO(dynamic_vhd(data)), io.BytesIO(stored), dek)
    assert emulator.state and emulator.state.softlayer.templates[result.template_id].status == (
        "ACTIVE"
    )


def test_key_protect_generated_dek_and_imported_root_key(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    Secret(value=base64.b64encode(os.urandom(32)).decode()).save("ibm-test-root", overwrite=True)
    result = provision_encrypted_ibm_image(
        request(
            ibm_block,
            emulator,
            dek_from_key_protect=True,
            root_key_material_block="ibm-test-root",
            order=None,
        )
    )
    assert emulator.state is not None
    root = emulator.state.keyprotect.instances[emulator.ibm_identity.key_protect_instance].keys[
        result.root_key_id
    ]
    assert root.imported and not root.extractable
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    dek = base64.b64decode(kp.unwrap(result.root_key_id, str(result.wrapped_dek))["plaintext"])
    assert len(dek) == 32 and keyhash(dek).hex() == result.keyhash


def test_no_secret_in_prefect_records(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)  # restored after the test
        logger.setLevel(logging.INFO)  # so that INFO lines reach the API too
    assert emulator.state is not None
    iam = emulator.state.iam
    service_keys: list[str] = []
    create_api_key = iam.create_api_key

    def recording(body: dict[str, Any]) -> Any:
        key = create_api_key(body)
        service_keys.append(key.value)
        return key

    monkeypatch.setattr(iam, "create_api_key", recording)
    state = provision_encrypted_ibm_image(request(ibm_block, emulator), return_state=True)
    result = state.result()
    APILogHandler().flush()
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    dek_b64 = kp.unwrap(result.root_key_id, str(result.wrapped_dek))["plaintext"]
    secrets = [
        emulator.ibm_identity.api_key,
        *service_keys,
        dek_b64,
        base64.b64decode(dek_b64).hex(),
    ]
    assert len(service_keys) == 1
    records = run_records(state.state_details.flow_run_id)
    assert any("Wrapped a 64-byte DEK" in r for r in records), "INFO logs reached the API"
    assert any("Encrypted IBM Cloud image" in r for r in records), "the summary artifact"
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    stored = [p.read_bytes() for p in storage.rglob("*") if p.is_file()] if storage.exists() else []
    for secret in secrets:
        assert not [r for r in records if secret in r]
        assert not [s for s in stored if secret.encode() in s]
    assert result.model_dump_json().count(dek_b64) == 0


OTHER_CRN = "crn:v1:bluemix:public:kms:eu-de:a/x:y:key:z"
RULES: list[tuple[str, dict[str, Any], str]] = [
    ("cross-region bucket", {}, "bucket = 'byok-images': the bucket is not regional"),
    ("other region bucket", {}, "region mismatch: the bucket is regional in eu-de"),
    ("bad bucket name", {"bucket": "Bad_Bucket"}, "bucket = 'Bad_Bucket': bucket names"),
    ("bad image name", {"image_name": "-x"}, "image_name = '-x': image template names"),
    ("not a vhd", {"source_object": "notes.vhd"}, "'notes.vhd': the object is not a VHD"),
    ("too large", {"source_object": "huge.vhd"}, "101.0 GiB; IBM imports images of at most 100 GB"),
    ("standard key", {}, "root_key = 'image-root': this is a standard key"),
    ("root key crn elsewhere", {"root_key": OTHER_CRN}, "region mismatch: the key is in eu-de"),
    ("bad dek", {"dek_secret_block": "ibm-test-bad-dek"}, "'<redacted>': key is 48 bytes"),
    ("missing source", {"source_object": "none.vhd"}, "'none.vhd': no such object"),
    (
        "unknown os",
        {"os_reference_code": "MARSOS_1_64"},
        "os_reference_code = 'MARSOS_1_64': not one of what getVhdImportSoftwareDescriptions",
    ),
    (
        "unknown datacenter",
        {"order": VirtualServerOrder(hostname="vsi1", domain="example.com", datacenter="mars01")},
        "order.datacenter = 'mars01': not one of what SoftLayer_Location::getDatacenters lists",
    ),
    ("malformed crn", {"root_key": "crn:v1:kms"}, "root_key = 'crn:v1:kms': not a CRN"),
]


def prepare_rule(
    emulator: Emulator, ibm: IBMClients, case: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The emulator state that breaks `case`; the request overrides."""
    s3 = ibm.cos()
    location = {"cross-region bucket": "us-standard", "other region bucket": "eu-de-standard"}
    s3.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": location.get(case, "us-south-standard")},
    )
    s3.put_object(Bucket=BUCKET, Key="notes.vhd", Body=b"not a disk image\n" * 64)
    s3.put_object(Bucket=BUCKET, Key="huge.vhd", Body=huge_vhd(101 * 1024**3))
    if case == "standard key":
        ibm.key_protect(emulator.ibm_identity.key_protect_instance).create_key(
            "image-root", extractable=True
        )
    Secret(value=base64.b64encode(BAD_DEK).decode()).save("ibm-test-bad-dek", overwrite=True)
    emulator.requests.clear()
    if "source_object" in overrides:
        return {**overrides, "source_template_id": None}
    return overrides


BAD_DEK = os.urandom(48)


@pytest.mark.parametrize(("case", "overrides", "match"), RULES, ids=[r[0] for r in RULES])
def test_rules_name_field_value_and_rule(
    ibm_block: str,
    emulator: Emulator,
    ibm: IBMClients,
    ibm_credentials: IBMCloudCredentials,
    case: str,
    overrides: dict[str, Any],
    match: str,
) -> None:
    overrides = prepare_rule(emulator, ibm, case, overrides)
    with pytest.raises(InvalidRequest, match=re.escape(match)) as caught:
        validate_image_request.fn(ibm_credentials, request(ibm_block, emulator, **overrides))
    assert writes(emulator) == []
    assert base64.b64encode(BAD_DEK).decode() not in str(caught.value)


@pytest.mark.parametrize("case", ["other region bucket", "too large"])
def test_the_flow_validates_before_any_write(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, case: str
) -> None:
    rule = next(r for r in RULES if r[0] == case)
    overrides = prepare_rule(emulator, ibm, case, rule[1])
    with pytest.raises(InvalidRequest, match=re.escape(rule[2])):
        provision_encrypted_ibm_image(request(ibm_block, emulator, **overrides))
    assert writes(emulator) == []


# One crash per step, in the flow's order (the key cleanup before the import wait: a crashed
# wait's run retires the key itself once the import ended): each re-run must cope with what
# the crashed run left, get past it and crash at the next step; the last run finishes.
CRASHES = [
    ("root key", "POST", r"^/api/v2/keys$"),
    ("wrap", "POST", r"/actions/wrap$"),
    ("authorization", "POST", r"^/v1/policies$"),
    ("bucket", "PUT", rf"^/{BUCKET}/?$"),
    ("export", "POST", r"/copyToIcos"),
    ("upload", "PUT", rf"^/{BUCKET}/{OBJECT}$"),
    ("service id", "POST", r"^/v1/serviceids/?$"),
    ("access policy", "POST", r"^/v1/policies$"),
    ("api key", "POST", r"^/v1/apikeys/?$"),
    ("import", "POST", r"/createFromIcos"),
    ("key cleanup", "DELETE", r"^/v1/apikeys/"),
    ("import wait", "GET", rf"Template_Group/(?!{SEED_TEMPLATE_ID})\d+/getObject"),
    ("order", "POST", r"Virtual_Guest/createObject"),
    ("provisioning wait", "GET", r"Virtual_Guest/\d+/getObject"),
]


def test_rerun_after_a_crash_at_each_step(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    for step, method, path in CRASHES:
        crash = emulator.faults.add(
            Fault("status", method=method, path=path, status=400, code="InjectedCrash")
        )
        with pytest.raises(Exception, match=r"InjectedCrash|Injected by the emulator"):
            provision_encrypted_ibm_image(request(ibm_block, emulator))
        assert crash.fired == 1, step
    result = provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert state_counts(emulator, ibm) == EXPECTED
    assert emulator.state is not None
    assert emulator.state.softlayer.templates[result.template_id].status == "ACTIVE"


def test_crash_in_a_multipart_upload_leaves_no_upload_behind(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    s3.put_object(Bucket=BUCKET, Key="source.vhd", Body=dynamic_vhd(os.urandom(12 << 20)))
    emulator.faults.add(
        Fault(
            "status", method="PUT", path=rf"^/{BUCKET}/{OBJECT}$", status=400, code="InjectedCrash"
        )
    )
    parts = {"multipart_threshold_mb": 5, "part_size_mb": 5, "order": None}
    source = {"source_template_id": None, "source_object": "source.vhd"}
    with pytest.raises(Exception, match="InjectedCrash"):
        provision_encrypted_ibm_image(request(ibm_block, emulator, **parts, **source))
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=OBJECT)
    result = provision_encrypted_ibm_image(request(ibm_block, emulator, **parts, **source))
    assert result.template_id and s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_burst_of_429s_is_absorbed(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(IBMClients, "max_retry_interval", 0.1)  # the clients' backoff cap
    faults = [
        emulator.faults.add(Fault("status", method=method, path=path, status=429, count=count))
        for method, path, count in [
            ("POST", r"/actions/wrap$", 3),
            ("POST", r"^/v1/policies$", 3),
            ("POST", r"^/v1/serviceids/?$", 3),
            ("POST", r"/createFromIcos", 3),
            ("GET", r"Virtual_Guest/\d+/getObject", 3),
            ("PUT", rf"^/{BUCKET}/{OBJECT}$", 1),  # botocore: no Retry-After, ~1 s backoff
        ]
    ]
    provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert [f.fired for f in faults] == [f.count for f in faults]
    assert state_counts(emulator, ibm) == EXPECTED
