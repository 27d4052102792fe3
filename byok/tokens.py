"""Who the caller is, from its own access token (no Prefect import)."""

from __future__ import annotations

import base64
import json

from azure.core.credentials import TokenCredential


def object_id(credential: TokenCredential, scope: str) -> str:
    """The caller's Entra object id: the `oid` claim of a token it gets for `scope`."""
    token = credential.get_token(scope).token
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["oid"])
    except (IndexError, KeyError, ValueError) as exc:
        raise ValueError("the access token carries no object id (oid) claim") from exc
