"""Secret blocks a request names (a DEK, root key material, a LUKS passphrase): loaded by
name when a step needs the value, which is never logged; a missing block or a value of the
wrong shape is an InvalidRequest naming the field."""

from __future__ import annotations

import base64
from typing import cast

from prefect.blocks.system import Secret

from byok.ibm_validation import REDACTED
from byok.validation import InvalidRequest

ROOT_KEY_SIZES = (16, 24, 32)


def load_secret(field: str, block: str) -> str:
    """The value of a saved Secret block (never logged)."""
    try:
        return str(cast(Secret, Secret.load(block)).get())  # loaded synchronously
    except ValueError as exc:
        raise InvalidRequest(field, block, f"no Secret block of that name ({exc})") from None


def decode_root_material(block: str) -> str:
    """Base64 root key material of 16, 24 or 32 bytes, from a Secret block."""
    material = load_secret("root_key_material_block", block).strip()
    try:
        size = len(base64.b64decode(material, validate=True))
    except ValueError:
        size = -1
    if size not in ROOT_KEY_SIZES:
        raise InvalidRequest(
            "root_key_material_block",
            REDACTED,
            "root key material must be 16, 24 or 32 bytes, base64-encoded",
        )
    return material
