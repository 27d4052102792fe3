"""Download → encrypt → upload as three tasks that run at once, joined by bounded in-memory
pipes: the image streams from COS through AES-XTS back into COS (a fixed-size source is
spooled, encrypted, to an anonymous temporary file that disappears when closed). A failure
at any stage fails the pipes, so the others stop and an unfinished multipart upload is
aborted."""

from __future__ import annotations

import io
import time
from collections.abc import Generator
from contextlib import closing
from typing import Any, BinaryIO, cast

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from blocks.ibm import IBMCloudCredentials
from byok.errors import VerificationFailed
from byok.ibm_cos_io import open_object, upload_stream
from byok.ibm_dek import META_KEYHASH, DataKey
from byok.ibm_models import SourceInfo, UploadInfo, object_uri
from byok.ibm_pipe import BytePipe
from byok.vhd import encrypt_vhd, vhd_info
from clients.ibm import IBMClients
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report

CHUNK = 1 << 20
PROGRESS_EVERY = 1.0  # seconds between progress artifact updates


@task(name="Download the image from COS", **IN_MEMORY)
def download_image(
    credentials: IBMCloudCredentials, cos_instance_id: str, source: SourceInfo, out: BytePipe
) -> int:
    """Stream the source object into `out`; returns the bytes read."""

    def chunks() -> Generator[bytes, None, None]:
        s3 = IBMClients.of(credentials).cos(cos_instance_id)
        yield from s3.get_object(Bucket=source.bucket, Key=source.key)["Body"].iter_chunks(CHUNK)

    done = _pump(chunks(), out)
    get_run_logger().info("Downloaded %s (%d bytes)", source.key, done)
    return done


@task(name="Read the image from disk", **IN_MEMORY)
def read_local_image(source: SourceInfo, out: BytePipe) -> int:
    """Stream the local source file into `out`; returns the bytes read."""

    def chunks() -> Generator[bytes, None, None]:
        with open(str(source.file), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    done = _pump(chunks(), out)
    get_run_logger().info("Read %s (%d bytes)", source.file, done)
    return done


def _pump(chunks: Generator[bytes, None, None], out: BytePipe) -> int:
    """Write every chunk into `out` and finish it; any failure (reading, or the pipe broken
    downstream) fails the pipe too. Returns the bytes written."""
    done = 0
    try:
        with closing(chunks):
            for chunk in chunks:
                out.write(chunk)
                done += len(chunk)
        out.finish()
    except BaseException as exc:
        out.fail(exc)
        raise
    return done


@task(name="Encrypt the image with the DEK", **IN_MEMORY)
def encrypt_image(data_key: DataKey, source: BytePipe, out: BytePipe) -> str:
    """AES-XTS encrypt the VHD stream into a tap-style VHD carrying the DEK's keyhash;
    returns the keyhash (hex)."""
    artifact: Any = create_progress_artifact(0.0, description="Encrypting the image")
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if total and time.monotonic() - last[0] >= PROGRESS_EVERY:
            last[0] = time.monotonic()
            update_progress_artifact(artifact, 100.0 * done / total)

    try:
        reader = io.BufferedReader(source, CHUNK)
        result = encrypt_vhd(reader, cast(BinaryIO, out), data_key.dek.get_secret_value(), progress)
        out.finish()
    except BaseException as exc:
        source.fail(exc)
        out.fail(exc)
        raise
    update_progress_artifact(artifact, 100.0)
    assert result.keyhash is not None
    get_run_logger().info("Encrypted %d of %d blocks", result.blocks_written, result.blocks_total)
    return result.keyhash.hex()


@task(name="Upload the encrypted image to COS", **IN_MEMORY)
def upload_image(
    credentials: IBMCloudCredentials,
    cos_instance_id: str,
    source: BytePipe,
    bucket: str,
    key: str,
    data_key_meta: dict[str, str],
    threshold: int,
    part_size: int,
) -> UploadInfo:
    """Upload the stream (multipart above `threshold`), then check what COS stored: a
    tap-style dynamic VHD whose keyhash is the DEK's (a bad object is deleted)."""
    s3 = IBMClients.of(credentials).cos(cos_instance_id)
    try:
        stored = upload_stream(
            s3,
            io.BufferedReader(source, CHUNK),
            bucket,
            key,
            threshold=threshold,
            part_size=part_size,
            metadata=data_key_meta,
        )
    except BaseException as exc:
        source.fail(exc)
        raise
    with open_object(s3, bucket, key, stored.size) as handle:
        info = vhd_info(handle)
    if (info.creator_app, info.disk_type, info.keyhash) != (
        "tap",
        "dynamic",
        data_key_meta[META_KEYHASH],
    ):
        s3.delete_object(Bucket=bucket, Key=key)
        raise VerificationFailed(
            f"{bucket}/{key}",
            f"COS stored a {info.creator_app!r} {info.disk_type} VHD with keyhash "
            f"{info.keyhash}, not the encrypted image; it was deleted",
        )
    parts = f"{stored.parts} parts" if stored.parts else "one request"
    report(
        object_uri(credentials.region, bucket, key),
        "upload",
        note=f"{stored.size} bytes in {parts}, keyhash {info.keyhash} verified",
    )
    return UploadInfo(
        bucket=bucket,
        key=key,
        size=stored.size,
        parts=stored.parts,
        keyhash=info.keyhash,
        reused=False,
    )
