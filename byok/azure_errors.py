"""Classifying Azure SDK errors (no Prefect import)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

T = TypeVar("T")

# Error codes of grants that have not propagated yet: a new principal unknown to the
# directory, or access given but not yet effective.
PROPAGATION_CODES = frozenset(
    {
        "PrincipalNotFound",
        "KeyVaultAccessForbidden",
        "ForbiddenByRbac",
        "AccessDenied",
        "Forbidden",
    }
)


def error_code(exc: BaseException) -> str | None:
    """The service's error code (or inner error code, when more specific)."""
    if not isinstance(exc, HttpResponseError) or exc.error is None:
        return None
    inner = getattr(exc.error, "innererror", None) or {}
    code = inner.get("code") if isinstance(inner, dict) else None
    return code or exc.error.code


def is_propagation_delay(exc: BaseException) -> bool:
    """Whether an error is what Azure answers while a new identity or grant propagates."""
    if not isinstance(exc, HttpResponseError):
        return False
    codes = {error_code(exc), exc.error.code if exc.error else None}
    return bool(codes & PROPAGATION_CODES) and exc.status_code in (400, 403)


def or_none(read: Callable[[], T]) -> T | None:
    """`read()`, or None when the resource does not exist (404)."""
    try:
        return read()
    except ResourceNotFoundError:
        return None
