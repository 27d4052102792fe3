"""Finding a Key Protect root key the way a request names it: by name, id or CRN."""

from __future__ import annotations

from typing import Any

from byok.validation import InvalidRequest
from clients.ibm import KeyProtectClient


def find_root_key(kp: KeyProtectClient, ref: str) -> dict[str, Any] | None:
    """The key named `ref` (a name, id or CRN), or None; a standard key is refused."""
    key_id = ref.rsplit(":", 1)[-1] if ref.startswith("crn:") else ref
    key = next((k for k in kp.list_keys() if key_id in (k.get("id"), k.get("name"))), None)
    if key is not None and key.get("extractable"):
        raise InvalidRequest(
            "root_key",
            ref,
            "this is a standard key (extractable); only a root key can wrap the DEK",
        )
    return key
