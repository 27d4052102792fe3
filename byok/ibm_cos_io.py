"""Streaming objects in and out of COS with an S3 client: a seekable ranged reader, and a
writer that uploads in one PUT up to a threshold and in parallel multipart parts above it,
aborting the multipart upload on any failure; a POST whose answer was lost is looked up, never
re-sent blind (no Prefect import)."""

from __future__ import annotations

import io
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, BinaryIO

from ibm_botocore.exceptions import ClientError

from byok.ibm_writes import create_once

MAX_PARTS = 10_000


class RangedObject(io.RawIOBase):
    """A seekable raw reader of one object: each read is a ranged GET."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self.size = client, bucket, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.size, self._pos + len(view))
        if end <= self._pos:
            return 0
        body = self._client.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end - 1}"
        )["Body"].read()
        view[: len(body)] = body
        self._pos += len(body)
        return len(body)


def open_object(client: Any, bucket: str, key: str, size: int) -> BinaryIO:
    """A buffered seekable reader of an object of `size` bytes."""
    return io.BufferedReader(RangedObject(client, bucket, key, size), 1 << 20)


@dataclass(frozen=True)
class Uploaded:
    """What an upload stored."""

    size: int
    parts: int  # 0: a single PUT
    etag: str


def upload_stream(
    client: Any,
    source: BinaryIO,
    bucket: str,
    key: str,
    *,
    threshold: int,
    part_size: int,
    metadata: dict[str, str],
    workers: int = 4,
) -> Uploaded:
    """Store everything `source` yields at `bucket/key`: one PUT when it ends within
    `threshold` bytes, else a multipart upload of `part_size` parts, at most `workers` in
    flight (memory: about (workers + 1) x part_size). A failure (of the source included)
    aborts the multipart upload and is raised."""
    head = _read_up_to(source, max(threshold, 1) + 1)
    if len(head) <= threshold:
        answer = client.put_object(Bucket=bucket, Key=key, Body=head, Metadata=metadata)
        return Uploaded(len(head), 0, answer["ETag"])
    upload_id = create_once(
        lambda: client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)[
            "UploadId"
        ],
        lambda: _newest_upload(client, bucket, key),
        f"a multipart upload of {bucket}/{key}",
    )
    try:
        return _upload_parts(client, source, bucket, key, upload_id, head, part_size, workers)
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def _newest_upload(client: Any, bucket: str, key: str) -> str | None:
    """The id of the latest unfinished multipart upload of `key` (one run writes an object
    at a time: the run lock), or None."""
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads") or []
    ours = sorted((u["Initiated"], u["UploadId"]) for u in uploads if u["Key"] == key)
    return ours[-1][1] if ours else None


def _completed(client: Any, bucket: str, key: str, upload_id: str) -> dict[str, Any] | None:
    """The object a completion whose answer was lost made: the upload is gone and the
    object is there (else None)."""
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads") or []
    if any(u["UploadId"] == upload_id for u in uploads):
        return None
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return None


def _upload_parts(
    client: Any,
    source: BinaryIO,
    bucket: str,
    key: str,
    upload_id: str,
    head: bytes,
    part_size: int,
    workers: int,
) -> Uploaded:
    def put(number: int, body: bytes) -> dict[str, Any]:
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    pending: set[Future[dict[str, Any]]] = set()
    done_parts: list[dict[str, Any]] = []
    size, number, carry = 0, 0, head
    with ThreadPoolExecutor(workers, thread_name_prefix="cos-part") as pool:
        try:
            while True:
                body = carry + _read_up_to(source, part_size - len(carry))
                carry = body[part_size:]
                body = body[:part_size]
                if not body:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise ValueError(f"more than {MAX_PARTS} parts: use a larger part size")
                size += len(body)
                pending.add(pool.submit(put, number, body))
                while len(pending) >= workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    done_parts += [f.result() for f in finished]
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            done_parts += [f.result() for f in finished]
        finally:
            for future in pending:
                future.cancel()
    answer = create_once(
        lambda: client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": sorted(done_parts, key=lambda p: p["PartNumber"])},
        ),
        lambda: _completed(client, bucket, key, upload_id),
        f"the object {bucket}/{key}",
    )
    return Uploaded(size, number, answer["ETag"])


def _read_up_to(source: BinaryIO, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = source.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


COPY_LIMIT = 5 * 1024**3  # the largest object one CopyObject request copies


def replace_metadata(
    client: Any,
    bucket: str,
    key: str,
    metadata: dict[str, str],
    *,
    size: int,
    etag: str,
    part_size: int = 1024**3,
    copy_limit: int = COPY_LIMIT,
) -> str:
    """Replace an object's user metadata by copying it onto itself (a multipart copy above
    `copy_limit`, aborted on failure), only if it is still the version `etag`; returns the
    new ETag. The data is copied server-side, never downloaded."""
    source = {"Bucket": bucket, "Key": key}
    if size <= copy_limit:
        answer = client.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource=source,
            CopySourceIfMatch=etag,
            Metadata=metadata,
            MetadataDirective="REPLACE",
        )
        return str(answer["CopyObjectResult"]["ETag"])
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)[
        "UploadId"
    ]
    try:
        parts = []
        for number, start in enumerate(range(0, size, part_size), 1):
            answer = client.upload_part_copy(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=source,
                CopySourceIfMatch=etag,
                CopySourceRange=f"bytes={start}-{min(size, start + part_size) - 1}",
            )
            parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
        done = client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return str(done["ETag"])
