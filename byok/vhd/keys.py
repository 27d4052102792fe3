"""Data encryption keys: loading, validation, and the vhd-util keyhash."""

from __future__ import annotations

import hashlib
import os
import stat
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
    """Read and validate a raw key from a path, '-' (standard input) or a binary file object.

    Errors name the file (never the key) and its real size.
    """
    if not isinstance(source, (str, os.PathLike)):
        return _checked(source.read(_READ), getattr(source, "name", "the key file"), None)
    if os.fspath(source) == "-":
        return _checked(sys.stdin.buffer.read(_READ), "standard input", None)
    name = os.fspath(source)
    try:
        with open(source, "rb") as handle:
            info = os.fstat(handle.fileno())
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
            return _checked(handle.read(_READ), f"key file {name}", size)
    except OSError as exc:
        raise VhdKeyError(f"cannot read key file {name!r}: {exc.strerror}") from None


_READ = max(KEY_SIZES) * 2 + 1  # enough to tell a key from a longer file without reading it all


def _checked(data: bytes, name: str, size: int | None) -> bytes:
    if len(data) == _READ:
        held = f"{size} bytes" if size is not None else f"more than {_READ - 1} bytes"
        raise VhdKeyError(f"{name} holds {held}; expected exactly 32 or 64 raw bytes")
    try:
        return validate_key(data)
    except VhdKeyError as exc:
        raise VhdKeyError(f"{name}: {exc}") from None


def keyhash(key: bytes, nonce: bytes = bytes(KEYHASH_NONCE_SIZE)) -> bytes:
    """SHA-256(nonce || key): the hash `vhd-util key -C` prints (zero nonce by default)."""
    if len(nonce) != KEYHASH_NONCE_SIZE:
        raise VhdKeyError(f"keyhash nonce is {len(nonce)} bytes; expected 32")
    return hashlib.sha256(bytes(nonce) + bytes(key)).digest()
