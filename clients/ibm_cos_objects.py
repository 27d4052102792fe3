"""Reads of COS buckets and objects the IBM steps share: a bucket's location, an object's
HEAD, a VHD object described from a few ranged reads, and an encrypted image with its byok
metadata. A missing bucket or object is an answer ('' or None), not an error."""

from __future__ import annotations

from typing import Any

from ibm_botocore.exceptions import ClientError

from byok.ibm_cos_io import open_object
from byok.ibm_dek import META_KEY_VERSION, META_KEYHASH, META_ROOT_KEY, META_WDEK
from byok.ibm_models import EncryptedObjectInfo
from byok.validation import InvalidRequest
from byok.vhd import VhdFormatError, VhdInfo, vhd_info

NOT_FOUND = frozenset({"404", "NoSuchBucket", "NoSuchKey", "NotFound"})


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
