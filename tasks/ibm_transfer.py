"""Download → encrypt → upload as three tasks that run at once, joined by bounded in-memory
pipes: the image streams from COS through AES-XTS back into COS (a fixed-size source is
spooled, encrypted, to an anonymous temporary file that disappears when closed). A failure
at any stage fails the pipes, so the others stop and an unfinished multipart upload is
aborted."""

from __future__ import annotations

import io
import time
from typing import Any, BinaryIO, cast

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from blocks.ibm import IBMCloudCredentials
from byok.ibm_cos_io import open_object, upload_stream
from byok.ibm_models import SourceInfo, UploadInfo
from byok.ibm_pipe import BytePipe
from byok.vhd import encrypt_vhd, vhd_info
from tasks.ibm_cos import META_KEY_VERSION, META_KEYHASH, META_ROOT_KEY, META_WDEK, cos_client
from tasks.ibm_key_protect import SECRET_TASK, DataKey

CHUNK = 1 << 20
PROGRESS_EVERY = 1.0  # seconds between progress artifact updates


class UploadVerifyError(RuntimeError):
    """The stored object is not the encrypted image that was sent."""


@task(name="Download the image from COS", **SECRET_TASK)
def download_image(
    credentials: IBMCloudCredentials, cos_instance_id: str, source: SourceInfo, out: BytePipe
) -> int:
    """Stream the source object into `out`; returns the bytes read."""
    try:
        s3 = cos_client(credentials, cos_instance_id)
        body = s3.get_object(Bucket=source.bucket, Key=source.key)["Body"]
        done = 0
        for chunk in body.iter_chunks(CHUNK):
            out.write(chunk)
            done += len(chunk)
        out.finish()
    except BaseException as exc:
        out.fail(exc)
        raise
    get_run_logger().info("Downloaded %s (%d bytes)", source.key, done)
    return done


@task(name="Read the image from disk", **SECRET_TASK)
def read_local_image(source: SourceInfo, out: BytePipe) -> int:
    """Stream the local source file into `out`; returns the bytes read."""
    try:
        done = 0
        with open(str(source.file), "rb") as handle:
            while chunk := handle.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
        out.finish()
    except BaseException as exc:
        out.fail(exc)
        raise
    get_run_logger().info("Read %s (%d bytes)", source.file, done)
    return done


@task(name="Encrypt the image with the DEK", **SECRET_TASK)
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


@task(name="Upload the encrypted image to COS", **SECRET_TASK)
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
    s3 = cos_client(credentials, cos_instance_id)
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
        raise UploadVerifyError(
            f"{bucket}/{key} holds a {info.creator_app!r} {info.disk_type} VHD with keyhash "
            f"{info.keyhash}, not the encrypted image; it was deleted"
        )
    get_run_logger().info(
        "Uploaded %s/%s: %d bytes in %s, keyhash verified",
        bucket,
        key,
        stored.size,
        f"{stored.parts} parts" if stored.parts else "one request",
    )
    return UploadInfo(
        bucket=bucket,
        key=key,
        size=stored.size,
        parts=stored.parts,
        keyhash=info.keyhash,
        reused=False,
    )


def object_metadata(data_key: DataKey, root_key_crn: str) -> dict[str, str]:
    """The byok metadata of an encrypted image (no secret: the DEK only wrapped)."""
    meta = {
        META_KEYHASH: data_key.keyhash,
        META_ROOT_KEY: root_key_crn,
        META_WDEK: data_key.wrapped,
    }
    if data_key.key_version:
        meta[META_KEY_VERSION] = data_key.key_version
    return meta
