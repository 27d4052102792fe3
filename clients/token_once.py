"""A token credential that fetches one token per scope at a time: azure-identity's
credentials do not coalesce concurrent requests, so threads that start together with an empty
cache (a Dask worker's share of moves, the keys' threads) would each fetch a token of their
own from Entra ID."""

from __future__ import annotations

import threading
from typing import Any, cast

from azure.core.credentials import AccessToken, AccessTokenInfo, SupportsTokenInfo, TokenCredential


class OneFetchPerScope:
    """Wraps a credential: a caller waits while another fetches a token for the same scopes,
    then gets it from the credential's cache."""

    def __init__(self, credential: TokenCredential) -> None:
        self.credential = credential
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, scopes: tuple[str, ...]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(scopes, threading.Lock())

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """The inner credential's token, one fetch per scope at a time."""
        with self._lock(scopes):
            return self.credential.get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        """As `get_token`, for azure-core's newer protocol (its pipelines prefer it; every
        azure-identity credential has it)."""
        with self._lock(scopes):
            info = cast(SupportsTokenInfo, self.credential)
            return info.get_token_info(*scopes, options=options)
