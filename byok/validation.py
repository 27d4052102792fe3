"""Request validation that names the field, the value and the rule (no Prefect import)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator

from byok.errors import InvalidRequest

__all__ = ["InvalidRequest"]


_RULES = {
    "key_vault": (
        re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$"),
        "key vault names are 3-24 letters, digits and single hyphens, start with a "
        "letter and end with a letter or digit",
    ),
    "resource_group": (
        re.compile(r"^[-\w._()]{0,89}[-\w_()]$"),
        "resource group names are 1-90 letters, digits, '_', '-', '.', '(' "
        "and ')', not ending with '.'",
    ),
    "disk_encryption_set": (
        re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,78}[a-zA-Z0-9_]$|^\w$"),
        "disk encryption set names are 1-80 letters, digits, '_' and '-', "
        "starting with a letter or digit",
    ),
    "key": (
        re.compile(r"^[a-zA-Z0-9-]{1,127}$"),
        "key names are 1-127 letters, digits and hyphens",
    ),
    # https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
    # (Microsoft.Compute: galleries, galleries/images, galleries/images/versions)
    "gallery": (
        re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.]{0,78}[a-zA-Z0-9])?$"),
        "gallery names are 1-80 letters, digits, '_' and '.', starting and ending with a "
        "letter or digit",
    ),
    "gallery_image": (
        re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9])?$"),
        "image definition names are 1-80 letters, digits, '_', '-' and '.', starting and "
        "ending with a letter or digit",
    ),
    "gallery_image_version": (
        re.compile(r"^\d{1,10}\.\d{1,10}\.\d{1,10}$"),
        "image versions are major.minor.patch, each a 32-bit integer (e.g. 1.0.0)",
    ),
    "identity": (
        re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$"),
        "identity names are 3-128 letters, digits, '_' and '-', starting with a letter or digit",
    ),
}


NameRules = Mapping[str, tuple[re.Pattern[str], str]]


def check_name(kind: str, field: str, value: str, rules: NameRules | None = None) -> str:
    """Return `value` if it is a valid name of `kind` (in `rules`, by default Azure's),
    else raise InvalidRequest naming the field, the value and the rule."""
    pattern, rule = (rules or _RULES)[kind]
    if not pattern.match(value or ""):
        raise InvalidRequest(field, value, rule)
    return value


def check_rsa_key_size(field: str, size: int) -> int:
    """RSA sizes the BYOK services accept."""
    if size not in (2048, 3072, 4096):
        raise InvalidRequest(field, size, "RSA keys must be 2048, 3072 or 4096 bits")
    return size


def check_image_version(field: str, value: str) -> str:
    """A gallery image version: major.minor.patch, each part a 32-bit integer."""
    check_name("gallery_image_version", field, value)
    if any(int(part) > 2**31 - 1 for part in value.split(".")):
        raise InvalidRequest(field, value, _RULES["gallery_image_version"][1])
    return value


def region_key(region: str) -> str:
    """An Azure region as the services compare them (case and spaces ignored)."""
    return region.lower().replace(" ", "")


def same_region(field: str, value: str, expected: str, what: str) -> None:
    """`value` (the request's) is the region of `what`, which is in `expected`."""
    if region_key(value) != region_key(expected):
        raise InvalidRequest(field, value, f"must be in the same region as {what} ({expected})")


def check_regions(regions: Mapping[str, str], known: Mapping[str, str]) -> None:
    """Each requested region (field → region) is one of `known` (region_key → name), the
    subscription's locations."""
    for field, region in regions.items():
        if region_key(region) not in known:
            raise InvalidRequest(
                field,
                region,
                f"not a region of this subscription ({', '.join(sorted(set(known.values())))})",
            )


# Gallery names as request fields (pydantic adds the field's name to the message).
GalleryName = Annotated[str, AfterValidator(lambda value: check_name("gallery", "", value))]
GalleryImageName = Annotated[
    str, AfterValidator(lambda value: check_name("gallery_image", "", value))
]
ImageVersionName = Annotated[str, AfterValidator(lambda value: check_image_version("", value))]
