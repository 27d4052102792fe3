"""Root key rotation of an encrypted IBM image end to end against the emulator (Key Protect,
moto COS): the key's new version, the rewrapped DEK recorded with the object, the event, the
rules checked before any write, and a re-run after a crash between rotation and rewrap."""

from __future__ import annotations

import base64
import os
import re
import time
from typing import Any

import pytest
from prefect.blocks.system import Secret

from blocks.ibm import IBMCloudCredentials
from byok.ibm_cos_io import replace_metadata
from byok.ibm_dek import META_KEY_VERSION, META_KEYHASH, META_ROOT_KEY, META_WDEK
from byok.ibm_models import IbmImageResult, IbmKeyRotationRequest
from byok.validation import InvalidRequest
from byok.vhd import keyhash
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.server import Emulator
from flows.ibm_image import provision_encrypted_ibm_image
from flows.ibm_rotation import rotate_ibm_root_key
from tasks.ibm_rotation import validate_rotation_request
from tests.flows.test_events import byok_events
from tests.flows.test_ibm_image import (  # noqa: F401 (quick_softlayer: autouse fixture)
    BUCKET,
    OBJECT,
    dynamic_vhd,
    quick_softlayer,
    request,
    writes,
)


def provision(block: str, emulator: Emulator, ibm: IBMClients, **overrides: Any) -> IbmImageResult:
    """An encrypted image from a small VHD object (no virtual server)."""
    s3 = ibm.cos()
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
        )
        s3.put_object(Bucket=BUCKET, Key="source.vhd", Body=dynamic_vhd(os.urandom(3 << 20)))
    values = {"source_template_id": None, "source_object": "source.vhd", "order": None}
    return provision_encrypted_ibm_image(request(block, emulator, **{**values, **overrides}))


def rotation(block: str, emulator: Emulator, image: IbmImageResult, **kw: Any) -> Any:
    ibm = emulator.ibm_identity
    return IbmKeyRotationRequest.for_image(
        image, block, ibm.key_protect_instance, ibm.cos_instance, **kw
    )


def root_versions(emulator: Emulator, key_id: str) -> list[str]:
    assert emulator.state is not None
    instance = emulator.state.keyprotect.instances[emulator.ibm_identity.key_protect_instance]
    return [v.id for v in instance.keys[key_id].versions]


def stored_metadata(ibm: IBMClients) -> dict[str, str]:
    return ibm.cos().head_object(Bucket=BUCKET, Key=OBJECT)["Metadata"]


def unwrapped(ibm: IBMClients, emulator: Emulator, key_id: str, wrapped: str) -> bytes:
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    return base64.b64decode(kp.unwrap(key_id, wrapped)["plaintext"])


def test_rotation_rewraps_and_records_the_new_version(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    image = provision(ibm_block, emulator, ibm)
    assert stored_metadata(ibm)[META_KEY_VERSION] == image.key_version
    since = time.time() - 1
    data = ibm.cos().get_object(Bucket=BUCKET, Key=OBJECT)["Body"].read()
    result = rotate_ibm_root_key(rotation(ibm_block, emulator, image))
    versions = root_versions(emulator, image.root_key_id)
    assert len(versions) == 2 and result.rotated
    assert (result.previous_version, result.key_version) == (image.key_version, versions[-1])
    meta = stored_metadata(ibm)
    assert meta[META_WDEK] == result.wrapped_dek != image.wrapped_dek
    assert meta[META_KEY_VERSION] == versions[-1]
    assert (meta[META_KEYHASH], meta[META_ROOT_KEY]) == (image.keyhash, image.root_key_crn)
    assert ibm.cos().get_object(Bucket=BUCKET, Key=OBJECT)["Body"].read() == data
    dek = unwrapped(ibm, emulator, image.root_key_id, result.wrapped_dek)
    assert keyhash(dek).hex() == image.keyhash == result.keyhash
    # the rewrapped DEK is under the latest version: unwrapping it needs no rewrap
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    assert "rewrappedKeyVersion" not in kp.unwrap(image.root_key_id, result.wrapped_dek)
    events = [
        e
        for e in byok_events(since, ids=[image.root_key_crn])
        if e["event"] == "byok.key.rotated" and e["resource"]["byok.id"] == image.root_key_crn
    ]
    assert len(events) == 1
    assert events[0]["payload"]["new_version"] == versions[-1]
    assert events[0]["related"][0]["byok.id"] == image.object_uri
    assert result.model_dump_json().count(base64.b64encode(dek).decode()) == 0
    # a second run an hour later (Key Protect: one rotation per hour) is a second rotation;
    # the provision flow still reuses the image after it
    assert emulator.state is not None
    emulator.state.keyvault.clock.advance(3600)
    again = rotate_ibm_root_key(rotation(ibm_block, emulator, image))
    assert again.rotated and len(root_versions(emulator, image.root_key_id)) == 3
    reused = provision(ibm_block, emulator, ibm)
    assert reused.template_id == image.template_id and reused.keyhash == image.keyhash


@pytest.mark.parametrize("crash", ["after rotate", "record"])
def test_rerun_after_a_crash_finishes_without_rotating_twice(
    ibm_block: str,
    emulator: Emulator,
    ibm: IBMClients,
    monkeypatch: pytest.MonkeyPatch,
    crash: str,
) -> None:
    image = provision(ibm_block, emulator, ibm)
    assert emulator.state is not None
    kp_model = emulator.state.keyprotect
    if crash == "after rotate":  # the rewrap that follows the rotation fails
        rotate = kp_model.rotate

        def rotate_then_break(key: Any, body: dict[str, Any]) -> None:
            rotate(key, body)
            emulator.faults.add(
                Fault("status", "POST", r"/actions/rewrap$", status=400, code="InjectedCrash")
            )

        monkeypatch.setattr(kp_model, "rotate", rotate_then_break)
    else:  # the copy in place that records the rewrapped DEK fails
        emulator.faults.add(
            Fault("status", "PUT", rf"^/{BUCKET}/{OBJECT}$", status=400, code="InjectedCrash")
        )
    with pytest.raises(Exception, match="InjectedCrash"):
        rotate_ibm_root_key(rotation(ibm_block, emulator, image))
    versions = root_versions(emulator, image.root_key_id)
    assert len(versions) == 2  # rotated, not recorded
    assert stored_metadata(ibm)[META_WDEK] == image.wrapped_dek
    monkeypatch.undo()
    result = rotate_ibm_root_key(rotation(ibm_block, emulator, image))
    assert not result.rotated and root_versions(emulator, image.root_key_id) == versions
    assert (result.previous_version, result.key_version) == (image.key_version, versions[-1])
    assert stored_metadata(ibm)[META_KEY_VERSION] == versions[-1]
    dek = unwrapped(ibm, emulator, image.root_key_id, result.wrapped_dek)
    assert keyhash(dek).hex() == image.keyhash


def test_imported_root_key_rotates_to_new_material(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    Secret(value=base64.b64encode(os.urandom(32)).decode()).save("ibm-rot-root", overwrite=True)
    image = provision(ibm_block, emulator, ibm, root_key_material_block="ibm-rot-root")
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="root_key_material_block = None: the root key was"):
        rotate_ibm_root_key(rotation(ibm_block, emulator, image))
    assert writes(emulator) == []
    Secret(value=base64.b64encode(os.urandom(32)).decode()).save("ibm-rot-new", overwrite=True)
    result = rotate_ibm_root_key(
        rotation(ibm_block, emulator, image, root_key_material_block="ibm-rot-new")
    )
    assert result.rotated and len(root_versions(emulator, image.root_key_id)) == 2
    dek = unwrapped(ibm, emulator, image.root_key_id, result.wrapped_dek)
    assert keyhash(dek).hex() == image.keyhash


RULES = [
    ("missing object", {"object_key": "none.vhd"}, "object_key = 'none.vhd': no such object"),
    ("foreign object", {"object_key": "source.vhd"}, "'source.vhd': bucket byok-images already"),
    ("other key", {"root_key": "other-root"}, "root_key = 'other-root': the DEK of"),
    ("standard key", {"root_key": "std-key"}, "root_key = 'std-key': this is a standard key"),
    ("missing bucket", {"bucket": "no-bucket"}, "bucket = 'no-bucket': no such bucket"),
    ("bad object name", {"object_key": "x.qcow2"}, "object_key = 'x.qcow2': object keys"),
]


def test_rotation_rules_before_any_write(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, ibm_credentials: IBMCloudCredentials
) -> None:
    image = provision(ibm_block, emulator, ibm)
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    kp.create_key("other-root")
    kp.create_key("std-key", extractable=True)
    emulator.requests.clear()
    for case, overrides, match in RULES:
        base = rotation(ibm_block, emulator, image).model_dump()
        with pytest.raises(InvalidRequest, match=re.escape(match)):
            validate_rotation_request.fn(
                ibm_credentials, IbmKeyRotationRequest(**{**base, **overrides})
            )
        assert writes(emulator) == [], case
    with pytest.raises(InvalidRequest, match=re.escape(RULES[2][2])):  # the flow checks first
        rotate_ibm_root_key(rotation(ibm_block, emulator, image, root_key_material_block=None)
                            .model_copy(update={"root_key": "other-root"}))  # fmt: skip
    assert writes(emulator) == []
    assert len(root_versions(emulator, image.root_key_id)) == 1


def test_metadata_of_a_large_object_is_replaced_by_a_multipart_copy(
    emulator: Emulator, ibm: IBMClients
) -> None:
    s3 = ibm.cos()
    s3.create_bucket(Bucket=BUCKET)
    body = os.urandom(12 << 20)
    s3.put_object(Bucket=BUCKET, Key=OBJECT, Body=body, Metadata={"a": "1"})
    found = s3.head_object(Bucket=BUCKET, Key=OBJECT)
    replace_metadata(
        s3,
        BUCKET,
        OBJECT,
        {"a": "2", "b": "3"},
        size=len(body),
        etag=found["ETag"],
        part_size=5 << 20,
        copy_limit=5 << 20,
    )
    assert s3.head_object(Bucket=BUCKET, Key=OBJECT)["Metadata"] == {"a": "2", "b": "3"}
    assert s3.get_object(Bucket=BUCKET, Key=OBJECT)["Body"].read() == body
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
