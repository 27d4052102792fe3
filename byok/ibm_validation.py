"""Rules of the IBM Cloud image procedure: names, regions, bucket locations, image sizes and
data encryption keys (no Prefect import; errors never carry key material)."""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat

from byok.ibm_dek_file import held_keyhash, sidecar_path
from byok.validation import InvalidRequest, check_name
from byok.vhd import VhdFormatError, VhdInfo, VhdKeyError, validate_key, vhd_info

MAX_IMAGE_SIZE = 100 * 1024**3  # IBM's import limit (boot disk, 100 GB)
REDACTED = "<redacted>"
# IBM Cloud multizone regions, and the storage classes of COS location constraints.
REGIONS = frozenset(
    {"us-south", "us-east", "ca-tor", "br-sao", "eu-gb", "eu-de", "eu-es", "au-syd", "jp-tok",
     "jp-osa"}
)  # fmt: skip
STORAGE_CLASSES = ("standard", "vault", "cold", "smart", "flex", "onerate_active")

_RULES = {
    "bucket": (
        re.compile(
            r"^(?!.*(\.\.|\.-|-\.))(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
        ),
        "bucket names are 3-63 lowercase letters, digits, '.' and '-', start and end with a "
        "letter or digit, and are not IP addresses",
    ),
    "object": (
        re.compile(r"^(?!/)[\x21-\x7e][\x20-\x7e]{0,1018}\.vhd$"),
        "object keys are 5-1024 printable ASCII characters ending with '.vhd', not starting "
        "with '/'",
    ),
    "template": (
        re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"),
        "image template names are 1-100 letters, digits, spaces, '.', '_' and '-', starting "
        "with a letter or digit",
    ),
    "key": (
        re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{1,89}$"),
        "Key Protect key names are 2-90 letters, digits, spaces, '.', '_' and '-', starting "
        "with a letter or digit",
    ),
    "service_id": (
        re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"),
        "service ID names are 1-100 letters, digits, spaces, '.', '_' and '-'",
    ),
    "hostname": (
        re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
        "host names are 1-63 lowercase letters, digits and inner hyphens",
    ),
    "domain": (
        re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"),
        "domains are dot-separated lowercase labels ending with a top-level domain",
    ),
    "guid": (
        re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
        "instance ids are lowercase GUIDs (8-4-4-4-12 hex digits)",
    ),
}


def check_ibm_name(kind: str, field: str, value: str) -> str:
    """Return `value` if it is a valid IBM Cloud name of `kind`, else raise InvalidRequest."""
    return check_name(kind, field, value, _RULES)


def crn_region(field: str, crn: str) -> str:
    """The region of the CRN that `field` gives (`crn:v1:<cname>:<ctype>:<service>:<region>:…`)."""
    parts = crn.split(":")
    if len(parts) < 6 or parts[:2] != ["crn", "v1"]:
        raise InvalidRequest(field, crn, "not a CRN (crn:v1:bluemix:public:<service>:<region>:…)")
    return parts[5]


def check_listed(field: str, value: str, listed: set[str], source: str) -> None:
    """`value` must be one of what the API lists (`source` names the call)."""
    if value not in listed:
        known = ", ".join(sorted(listed)[:12]) + (", …" if len(listed) > 12 else "")
        raise InvalidRequest(field, value, f"not one of what {source} lists ({known})")


def check_bucket_location(field: str, bucket: str, location: str | None, region: str) -> None:
    """The bucket must be regional (`<region>-<class>`) in the Key Protect region."""
    prefix = (location or "").rsplit("-", 1)[0]
    if location in (region, *(f"{region}-{c}" for c in STORAGE_CLASSES)):
        return
    if prefix in REGIONS or location in REGIONS:
        raise InvalidRequest(
            field,
            bucket,
            f"region mismatch: the bucket is regional in {prefix or location} (location "
            f"{location!r}) but Key Protect is in {region}; use a bucket in {region}",
        )
    raise InvalidRequest(
        field,
        bucket,
        f"the bucket is not regional (location {location!r}: cross-region or single-site); "
        f"images are imported from a regional bucket in {region} "
        f"(location constraint {region}-standard or another {region}-<class>)",
    )


def decode_dek(field: str, encoded: str) -> bytes:
    """A base64 DEK of exactly 32 or 64 bytes (AES-XTS-128/256); errors never show it."""
    try:
        dek = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, REDACTED, "the DEK must be base64-encoded") from None
    try:
        return validate_key(dek)
    except VhdKeyError as exc:
        raise InvalidRequest(field, REDACTED, str(exc)) from None


def check_source_vhd(field: str, value: str, info: VhdInfo) -> None:
    """An importable unencrypted source: a fixed or dynamic VHD of at most 100 GB."""
    if info.disk_type not in ("fixed", "dynamic"):
        raise InvalidRequest(
            field, value, f"the VHD is {info.disk_type}; only fixed or dynamic disks are imported"
        )
    if info.keyhash:
        raise InvalidRequest(field, value, "the VHD is already encrypted (it has a keyhash)")
    check_image_size(field, value, info.virtual_size)


def check_image_size(field: str, value: str, size: int) -> None:
    """IBM imports boot disks of at most 100 GB."""
    if size > MAX_IMAGE_SIZE:
        raise InvalidRequest(
            field,
            value,
            f"the image is {size / 1024**3:.1f} GiB; IBM imports images of at most 100 GB",
        )


def local_vhd_info(field: str, path: str) -> tuple[int, VhdInfo]:
    """(size, description) of a local VHD file; InvalidRequest when it cannot be read or is
    not a VHD."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InvalidRequest(field, path, "not a regular file")
            return size, vhd_info(handle)
    except OSError as exc:
        raise InvalidRequest(field, path, f"cannot read the file: {exc.strerror}") from None
    except VhdFormatError as exc:
        raise InvalidRequest(field, path, f"the file is not a VHD: {exc}") from None


def check_dek_file(path: str, expected_keyhash: str | None, dek_known: bool) -> None:
    """The DEK key file can be written at `path` (its directory exists and it does not), or
    already holds the DEK this run will use (compared by keyhash; never shown)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidRequest("dek_file", path, f"no such directory {directory}")
    if not os.path.lexists(path):
        if not dek_known:
            raise InvalidRequest(
                "dek_file",
                path,
                "the image template already exists and no encrypted object holds its wrapped "
                "DEK: the key file can only be written by the run that encrypts the image",
            )
        return
    if not os.path.isfile(path) or os.path.islink(path):
        raise InvalidRequest("dek_file", path, "exists and is not a regular file")
    if expected_keyhash is None or held_keyhash(path) != expected_keyhash:
        raise InvalidRequest(
            "dek_file",
            path,
            "the file exists and does not hold this image's DEK (nor does its "
            f"{os.path.basename(sidecar_path(path))} record it); remove it or choose another "
            "path (it is never overwritten)",
        )
