"""Reading values out of SDK models (no Prefect import)."""

from __future__ import annotations

from enum import Enum


def text(value: object) -> str:
    """An SDK enum or string as its plain text ('RSA', not 'JsonWebKeyType.RSA')."""
    return str(value.value) if isinstance(value, Enum) else str(value)
