"""Pure rules of the IBM image flow, and the pipe and streaming upload helpers."""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import pytest

from byok.ibm_cos_io import upload_stream
from byok.ibm_pipe import BytePipe, PipeBroken
from byok.ibm_validation import check_bucket_location, check_ibm_name, decode_dek
from byok.validation import InvalidRequest


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
        self.fail_part, self.calls, self.parts = fail_part, [], {}

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
