"""One client context per credentials block and process, in the pattern of prefect-aws's
cached `get_client`: every task run in the process (threads, or one Dask worker) shares the
block's token credential and SDK clients, so a flow run asks for one token per scope instead
of one per task, and connections are reused."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TypeVar

from prefect.blocks.core import Block
from pydantic import SecretBytes, SecretStr

T = TypeVar("T")

_lock = threading.RLock()  # re-entrant: a `make` may itself ask for a shared object
_contexts: dict[tuple[object, ...], object] = {}


def fingerprint(block: Block) -> str:
    """A digest of every field of the block, secrets included (in memory only), so that
    blocks differing in any field (another principal, another secret) never share a context.
    Built from the field values: the block's own JSON dump builds its schema each time."""
    values = []
    for name in type(block).model_fields:
        value = getattr(block, name)
        if isinstance(value, SecretStr | SecretBytes):
            value = value.get_secret_value()
        values.append((name, repr(value)))
    return hashlib.sha256(repr((type(block).__name__, values)).encode()).hexdigest()


def shared(block: Block, *scope: object, make: Callable[[], T]) -> T:
    """The process's one object for this block and scope, made by `make` the first time."""
    key = (fingerprint(block), *scope)
    with _lock:
        if key not in _contexts:
            _contexts[key] = make()
        return _contexts[key]  # type: ignore[return-value]


def forget() -> None:
    """Drop every context (for tests that reset the emulator, whose tokens then die)."""
    with _lock:
        _contexts.clear()
