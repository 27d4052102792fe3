"""Pure rules of the IBM image flow, and the pipe and streaming upload helpers."""

from __future__ import annotations

import base64
import io
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import SoftLayer
from ibm_cloud_sdk_core import ApiException

from byok.ibm_cos_io import upload_stream
from byok.ibm_dek_file import read_sidecar, sidecar_path, write_key_file
from byok.ibm_models import WrappedDek
from byok.ibm_pipe import BytePipe, PipeBroken
from byok.ibm_validation import check_bucket_location, check_ibm_name, crn_region, decode_dek
from byok.ibm_writes import answer_lost, create_once
from byok.validation import InvalidRequest
from byok.vhd import keyhash


@pytest.mark.parametrize("location", ["us-south", "us-south-standard", "us-south-onerate_active"])
def test_regional_buckets_in_the_region_pass(location: str) -> None:
    check_bucket_location("bucket", "b", location, "us-south")


@pytest.mark.parametrize(
    ("location", "rule"),
    [
        ("eu-de-smart", "region mismatch: the bucket is regional in eu-de"),
        ("us-standard", "not regional"),
        ("ams03-standard", "not regional"),
        (None, "not regional"),
    ],
)
def test_other_buckets_are_refused(location: str | None, rule: str) -> None:
    with pytest.raises(InvalidRequest, match=rule):
        check_bucket_location("bucket", "b", location, "us-south")


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("bucket", "byok-images", True),
        ("bucket", "192.168.1.1", False),
        ("bucket", "a..b", False),
        ("object", "images/x.vhd", True),
        ("object", "/x.vhd", False),
        ("object", "x.qcow2", False),
        ("hostname", "vsi-1", True),
        ("hostname", "VSI", False),
        ("domain", "example.com", True),
        ("guid", "9d3f6c1e-0000-4000-8000-00000000b10c", True),
    ],
)
def test_names(kind: str, value: str, ok: bool) -> None:
    if ok:
        assert check_ibm_name(kind, "f", value) == value
    else:
        with pytest.raises(InvalidRequest, match=f"f = '{value}'"):
            check_ibm_name(kind, "f", value)


def test_dek_errors_never_show_the_key() -> None:
    dek = bytes(range(48))
    encoded = base64.b64encode(dek).decode()
    with pytest.raises(InvalidRequest) as caught:
        decode_dek("dek", encoded)
    assert encoded not in str(caught.value) and "48 bytes" in str(caught.value)
    with pytest.raises(InvalidRequest, match="base64"):
        decode_dek("dek", "not base64!")
    assert decode_dek("dek", base64.b64encode(bytes(range(64))).decode()) == bytes(range(64))


def test_pipe_failure_reaches_the_other_end() -> None:
    pipe = BytePipe(capacity=4)
    pipe.write(b"abcd")
    blocked: list[BaseException] = []

    def writer() -> None:
        try:
            pipe.write(b"efgh")  # waits: the pipe is full
        except PipeBroken as exc:
            blocked.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    pipe.fail(RuntimeError("reader died"))
    thread.join(5)
    assert blocked and "reader died" in str(blocked[0])
    with pytest.raises(PipeBroken):
        pipe.read(1)


class FakeS3:
    """Records calls; part `fail_part` raises."""

    def __init__(self, fail_part: int | None = None) -> None:
        self.fail_part = fail_part
        self.calls: list[str] = []
        self.parts: dict[int, bytes] = {}

    def put_object(self, **kw: Any) -> dict[str, str]:
        self.calls.append("put")
        return {"ETag": "e"}

    def create_multipart_upload(self, **kw: Any) -> dict[str, str]:
        self.calls.append("create")
        return {"UploadId": "u"}

    def upload_part(self, PartNumber: int, Body: bytes, **kw: Any) -> dict[str, str]:
        if PartNumber == self.fail_part:
            raise ConnectionError("lost")
        self.parts[PartNumber] = Body
        return {"ETag": f"e{PartNumber}"}

    def complete_multipart_upload(self, **kw: Any) -> dict[str, str]:
        self.calls.append("complete")
        return {"ETag": "m"}

    def abort_multipart_upload(self, **kw: Any) -> None:
        self.calls.append("abort")


def test_small_objects_go_in_one_put_large_ones_in_parts() -> None:
    s3 = FakeS3()
    assert upload_stream(s3, io.BytesIO(b"x" * 10), "b", "k", threshold=10, part_size=4,
                         metadata={}).parts == 0  # fmt: skip
    data = bytes(range(256)) * 40
    stored = upload_stream(s3, io.BytesIO(data), "b", "k", threshold=100, part_size=1000,
                           metadata={}, workers=2)  # fmt: skip
    assert stored.parts == 11 and stored.size == len(data)
    assert b"".join(s3.parts[n] for n in sorted(s3.parts)) == data
    assert s3.calls == ["put", "create", "complete"]


def test_a_failed_part_aborts_the_upload() -> None:
    s3 = FakeS3(fail_part=3)
    with pytest.raises(ConnectionError):
        upload_stream(s3, io.BytesIO(b"y" * 5000), "b", "k", threshold=10, part_size=1000,
                      metadata={})  # fmt: skip
    assert s3.calls == ["create", "abort"]


def test_a_malformed_crn_is_reported_under_the_field_that_gave_it() -> None:
    with pytest.raises(InvalidRequest, match=r"^root_key = 'crn:v1:kms': not a CRN"):
        crn_region("root_key", "crn:v1:kms")
    assert crn_region("root_key", "crn:v1:bluemix:public:kms:eu-de:a/x:y:key:z") == "eu-de"


def _http_error(status: int) -> ApiException:
    return ApiException(status, message="x")


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (requests.ConnectionError("reset"), True),
        (requests.ReadTimeout("slow"), True),
        (_http_error(504), True),
        (_http_error(500), True),
        (_http_error(503), False),  # refused before doing anything
        (_http_error(409), False),
        (SoftLayer.TransportError(0, "no answer"), True),
        (SoftLayer.SoftLayerAPIError(502, "gateway"), True),
        (SoftLayer.SoftLayerAPIError(400, "bad"), False),
        (ValueError("bug"), False),
    ],
)
def test_which_failures_may_hide_a_write(error: Exception, lost: bool) -> None:
    assert answer_lost(error) is lost


def test_create_once_looks_up_before_creating_again() -> None:
    made: list[str] = []

    def create() -> str:
        made.append("x")
        raise requests.ConnectionError("answer lost")

    assert create_once(create, lambda: "found", "thing") == "found" and made == ["x"]
    with pytest.raises(requests.ConnectionError):
        create_once(create, lambda: None, "thing")  # not there: created once more, lost again
    assert made == ["x", "x", "x"]
    with pytest.raises(ValueError):
        create_once(lambda: (_ for _ in ()).throw(ValueError("refused")), lambda: "no", "x")


def test_the_key_file_and_its_sidecar(tmp_path: Path) -> None:
    path = str(tmp_path / "image.key")
    dek = bytes(range(64))
    record = WrappedDek(
        keyhash=keyhash(dek).hex(), root_key_crn="crn:v1:k", wrapped_dek="wrapped", key_version="1"
    )
    assert write_key_file(path, dek, record) is True
    assert Path(path).read_bytes() == dek and read_sidecar(path) == record
    for written in (path, sidecar_path(path)):
        assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    assert dek.hex() not in Path(sidecar_path(path)).read_text()
    assert write_key_file(path, dek, record) is False  # kept, not rewritten
    other = record.model_copy(update={"keyhash": keyhash(bytes(64)).hex()})
    with pytest.raises(InvalidRequest, match="holds another key"):
        write_key_file(path, bytes(64), other)
    assert Path(path).read_bytes() == dek and read_sidecar(path) == record
