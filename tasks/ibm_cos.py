"""COS steps and reads: the regional bucket, and what an object holds (its size, whether it
is a VHD, and the byok metadata of an encrypted image)."""

from __future__ import annotations

from typing import Any

from ibm_botocore.exceptions import ClientError
from prefect import get_run_logger, task

from blocks.ibm import IBMCloudCredentials
from byok.ibm_cos_io import open_object
from byok.ibm_models import EncryptedObjectInfo
from byok.ibm_validation import check_bucket_location
from byok.validation import InvalidRequest
from byok.vhd import VhdFormatError, VhdInfo, vhd_info
from clients.ibm import IBMClients
from tasks.retry import STEP_RETRIES

# Metadata stored with an encrypted image: enough to reuse it (and its DEK) on a re-run.
META_KEYHASH, META_ROOT_KEY, META_WDEK = "byok-keyhash", "byok-root-key-crn", "byok-wrapped-dek"
META_KEY_VERSION = "byok-key-version"  # the root key version of the wrapped DEK
NOT_FOUND = frozenset({"404", "NoSuchBucket", "NoSuchKey", "NotFound"})


def cos_client(credentials: IBMCloudCredentials, cos_instance_id: str) -> Any:
    """The S3 client of the credentials (IAM mode needs the COS instance)."""
    return IBMClients.of(credentials).cos(cos_instance_id)


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND


def bucket_location(s3: Any, bucket: str) -> str | None:
    """The bucket's location constraint; '' when the bucket does not exist."""
    try:
        return s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except ClientError as exc:
        if _missing(exc):
            return ""
        raise


def head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The object's HEAD answer, or None when it (or its bucket) does not exist."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _missing(exc):
            return None
        raise


def read_vhd_info(s3: Any, bucket: str, key: str, size: int, field: str) -> VhdInfo:
    """Describe a VHD object from a few ranged reads; InvalidRequest when it is not one."""
    try:
        with open_object(s3, bucket, key, size) as handle:
            return vhd_info(handle)
    except VhdFormatError as exc:
        raise InvalidRequest(field, key, f"the object is not a VHD: {exc}") from None


def encrypted_object(s3: Any, bucket: str, key: str) -> EncryptedObjectInfo | None:
    """The encrypted image at `key` with its byok metadata, or None if there is none;
    InvalidRequest when another object (without that metadata) holds the key."""
    found = head(s3, bucket, key)
    if found is None:
        return None
    meta = found.get("Metadata") or {}
    if not all(meta.get(m) for m in (META_KEYHASH, META_ROOT_KEY, META_WDEK)):
        raise InvalidRequest(
            "encrypted_object",
            key,
            f"bucket {bucket} already holds an object of that name that this flow did not "
            "write; choose another key or delete the object",
        )
    return EncryptedObjectInfo(
        key=key,
        size=int(found["ContentLength"]),
        keyhash=meta[META_KEYHASH],
        root_key_crn=meta[META_ROOT_KEY],
        wrapped_dek=meta[META_WDEK],
        key_version=meta.get(META_KEY_VERSION) or None,
    )


@task(name="Ensure the regional COS bucket", **STEP_RETRIES)
def ensure_bucket(
    credentials: IBMCloudCredentials, cos_instance_id: str, bucket: str, storage_class: str
) -> str:
    """The bucket, created regional in the Key Protect region if missing (an existing one
    must be regional there); returns its location constraint."""
    s3 = cos_client(credentials, cos_instance_id)
    location = bucket_location(s3, bucket)
    if location == "":
        location = f"{credentials.region}-{storage_class}"
        try:
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location}
            )
        except ClientError as exc:  # a re-sent PUT whose first answer was lost
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
            location = bucket_location(s3, bucket)
        get_run_logger().info("Created bucket %s in %s", bucket, location)
    check_bucket_location("bucket", bucket, location, credentials.region)
    return str(location)
