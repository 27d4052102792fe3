"""Request validation that names the field, the value and the rule (no Prefect import)."""

from __future__ import annotations

import re
from collections.abc import Mapping

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


def same_region(field: str, value: str, expected: str, what: str) -> None:
    """Azure regions compared as the services do (case and spaces ignored)."""

    def norm(region: str) -> str:
        return region.lower().replace(" ", "")

    if norm(value) != norm(expected):
        raise InvalidRequest(field, value, f"must be in the same region as {what} ({expected})")
