"""Data encryption keys: loading, validation, and the vhd-util keyhash."""

from __future__ import annotations

import hashlib
import os
import sys
from typing import BinaryIO

from byok.vhd.format import KEYHASH_NONCE_SIZE

KEY_SIZES = (32, 64)


class VhdKeyError(ValueError):
    """A key is not usable for VHD encryption (the message says why; never the key)."""


def validate_key(key: bytes) -> bytes:
    """Return `key` if it is a usable AES-XTS key (32 or 64 raw bytes), else raise."""
    size = len(key)
    if size not in KEY_SIZES:
        if size - 1 in KEY_SIZES and key.endswith(b"\n"):
            raise VhdKeyError(
                f"key is {size} bytes: it ends with a trailing newline; a key file must hold "
                f"exactly 32 or 64 raw bytes (write it with `printf`/`head -c`, not `echo`)"
            )
        raise VhdKeyError(f"key is {size} bytes; expected exactly 32 or 64 raw bytes")
    half = size // 2
    if key[:half] == key[half:]:
        raise VhdKeyError("the two halves of the AES-XTS key are identical; use a random key")
    return bytes(key)


def load_key(source: str | os.PathLike[str] | BinaryIO) -> bytes:
    """Read and validate a raw key from a path, '-' (standard input) or a binary file object."""
    if isinstance(source, (str, os.PathLike)):
        if os.fspath(source) == "-":
            return validate_key(sys.stdin.buffer.read(129))
        try:
            with open(source, "rb") as handle:
                return validate_key(handle.read(129))
        except OSError as exc:
            name = os.fspath(source)
            raise VhdKeyError(f"cannot read key file {name!r}: {exc.strerror}") from None
    return validate_key(source.read(129))


def keyhash(key: bytes, nonce: bytes = bytes(KEYHASH_NONCE_SIZE)) -> bytes:
    """SHA-256(nonce || key): the hash `vhd-util key -C` prints (zero nonce by default)."""
    if len(nonce) != KEYHASH_NONCE_SIZE:
        raise VhdKeyError(f"keyhash nonce is {len(nonce)} bytes; expected 32")
    return hashlib.sha256(bytes(nonce) + bytes(key)).digest()
