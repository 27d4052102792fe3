"""The DEK key file (raw DEK bytes, what `vhd-util copy -k` reads) and its sidecar, which
records the same DEK wrapped by the root key, so that a run that crashed before its upload is
resumed with the DEK it wrote instead of blocking every re-run (no Prefect import). Both are
created mode 0600 from the first byte, in a temporary file linked into place: never over an
existing file."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from byok.ibm_models import WrappedDek
from byok.validation import InvalidRequest
from byok.vhd import keyhash

MAX_KEY_FILE = 129  # more than any valid key file: enough to tell it is not one


def sidecar_path(path: str) -> str:
    """Where the wrapped form of the key file's DEK is recorded."""
    return f"{path}.wrapped.json"


def held_keyhash(path: str) -> str:
    """The keyhash (hex) of the bytes the key file holds (never the bytes themselves)."""
    with open(path, "rb") as handle:
        return keyhash(handle.read(MAX_KEY_FILE)).hex()


def read_sidecar(path: str) -> WrappedDek | None:
    """The wrapped DEK recorded next to the key file `path`, if its sidecar exists."""
    sidecar = Path(sidecar_path(path))
    if not sidecar.is_file():
        return None
    try:
        return WrappedDek.model_validate_json(sidecar.read_bytes())
    except ValidationError:
        raise InvalidRequest(
            "dek_file", path, f"{sidecar} is not a wrapped-DEK record; remove it"
        ) from None


def _write(path: str, content: bytes, *, replace: bool) -> None:
    """Write `content` to `path` through a temporary file (mode 0600 from the first byte)
    moved over it (`replace`) or linked into place (never over an existing file)."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def write_key_file(path: str, dek: bytes, record: WrappedDek) -> bool:
    """The sidecar (first: a key file never exists without it), then the key file; a key
    file already holding this DEK is kept. Returns whether the key file was written."""
    exists = os.path.exists(path)
    if exists and held_keyhash(path) != record.keyhash:
        raise InvalidRequest("dek_file", path, "the file exists and holds another key")
    if read_sidecar(path) != record:
        _write(sidecar_path(path), record.model_dump_json().encode(), replace=True)
    if not exists:
        _write(path, dek, replace=False)
    return not exists
