"""Options of a step whose result stays in memory: never written to result storage, nor
hashed into a cache key. For steps that touch a secret (a DEK, a passphrase, an API key) and
steps that hand the whole fleet on (keeping it, or hashing it, buys nothing)."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

IN_MEMORY: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}
