"""The data encryption key of a classic image: its in-memory form, and the byok metadata
stored with the encrypted image in COS (enough to reuse the image and its DEK on a re-run,
and to rotate the root key that wraps it)."""

from __future__ import annotations

from pydantic import BaseModel, SecretBytes

META_KEYHASH, META_ROOT_KEY, META_WDEK = "byok-keyhash", "byok-root-key-crn", "byok-wrapped-dek"
META_KEY_VERSION = "byok-key-version"  # the root key version of the wrapped DEK


class DataKey(BaseModel):
    """The DEK (masked in any repr), its wrapped form and its keyhash."""

    dek: SecretBytes
    wrapped: str
    key_version: str | None
    keyhash: str
    recovered: bool


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
