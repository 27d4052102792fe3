"""Classifying Azure SDK errors, and turning the permanent ones into the project's error
family (no Prefect import)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.polling.base_polling import BadResponse, BadStatus, OperationFailed

from byok.errors import ByokError, PropagationTimedOut, ResourceError, ServiceRefused
from byok.errors import OperationFailed as ByokOperationFailed

T = TypeVar("T")

# Error codes of grants that have not propagated yet: a new principal unknown to the
# directory, or access given but not yet effective (Key Vault answers 403 Forbidden with the
# inner code ForbiddenByRbac or AccessDenied; Compute and ACR 400 KeyVaultAccessForbidden).
# https://learn.microsoft.com/azure/role-based-access-control/troubleshooting#symptom---role-assignment-changes-are-not-being-detected
PROPAGATION_CODES = frozenset(
    {"PrincipalNotFound", "KeyVaultAccessForbidden", "ForbiddenByRbac", "AccessDenied"}
)
# 403s no wait changes: the vault's firewall or disabled public access, a disabled key, an
# operation the key refuses.
# https://learn.microsoft.com/azure/key-vault/general/rest-error-codes#http-403-insufficient-permissions
PERMANENT_CODES = frozenset(
    {
        "ForbiddenByFirewall",
        "ForbiddenByConnection",
        "KeyDisabled",
        "KeyOperationForbidden",
        "ForbiddenByPolicy",
    }
)
# Conflicts that a re-sent write gets when the first send was served.
RESENT_CONFLICT_CODES = frozenset(
    {"AnotherOperationInProgress", "RoleAssignmentExists", "RoleAssignmentUpdateNotPermitted"}
)
# Codes of a failed long-running operation that a new attempt may get past.
# https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/common-deployment-errors
RETRYABLE_OPERATION_CODES = frozenset(
    {
        "InternalServerError",
        "InternalOperationError",
        "RetryableError",
        "ServiceUnavailable",
        "OperationPreempted",
        "TooManyRequests",
    }
)


class RetryAfterTooLong(ServiceRefused):
    """The service asked to wait longer than we accept (a throttled subscription)."""

    def __init__(self, resource_id: str, seconds: float, cap: float) -> None:
        super().__init__(
            resource_id,
            f"throttled: the service asks to wait {seconds:g} s (Retry-After), more than the "
            f"{cap:g} s allowed (the credentials block's max_retry_after_seconds)",
        )
        self.seconds, self.cap = seconds, cap

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.resource_id, self.seconds, self.cap)


def error_code(exc: BaseException) -> str | None:
    """The service's error code (or inner error code, when more specific)."""
    if not isinstance(exc, HttpResponseError) or exc.error is None:
        return None
    inner = getattr(exc.error, "innererror", None) or {}
    code = inner.get("code") if isinstance(inner, dict) else None
    return code or exc.error.code


def _codes(exc: HttpResponseError) -> set[str]:
    return {c for c in (error_code(exc), exc.error.code if exc.error else None) if c}


def is_failed_operation(exc: BaseException) -> bool:
    """Whether a long-running operation ended Failed (or its resource in a Failed state)."""
    return isinstance(exc, HttpResponseError) and isinstance(
        exc.__cause__, OperationFailed | BadStatus | BadResponse
    )


def is_propagation_delay(exc: BaseException) -> bool:
    """Whether an error is what Azure answers while a new identity or grant propagates."""
    if not isinstance(exc, HttpResponseError) or exc.status_code not in (400, 403):
        return False
    codes = _codes(exc)
    return bool(codes & PROPAGATION_CODES) and not codes & PERMANENT_CODES


def is_lost_answer(exc: BaseException) -> bool:
    """Whether a write may have happened although no success came back: the answer was lost
    (a read error after sending, a 5xx gateway answer) or a re-sent request was refused as a
    conflict with the first one."""
    if isinstance(exc, ServiceResponseError):
        return True
    if not isinstance(exc, HttpResponseError) or is_failed_operation(exc):
        return False
    return exc.status_code in (500, 502, 503, 504) or (
        exc.status_code == 409 and bool(_codes(exc) & RESENT_CONFLICT_CODES)
    )


def is_azure_error(exc: BaseException) -> bool:
    """Any failure of an Azure call. After creating what did not exist, any failure is
    followed by a lookup: a create whose answer was lost and that the SDK sent again may be
    refused (a conflict, or a rule that applies to existing resources only) although the
    first send created it."""
    return isinstance(exc, AzureError)


def is_transient_azure(exc: BaseException) -> bool:
    """Whether an Azure error may pass on a later attempt: no connection, throttling, 5xx, an
    operation still running, or an operation that failed with a retryable code."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    if not isinstance(exc, HttpResponseError):
        return False
    if is_failed_operation(exc):
        return bool(_codes(exc) & RETRYABLE_OPERATION_CODES)
    if exc.status_code == 409:
        return "AnotherOperationInProgress" in _codes(exc)
    return exc.status_code in (408, 429, 500, 502, 503, 504)


def _message(exc: HttpResponseError) -> str:
    text = exc.error.message if exc.error and exc.error.message else exc.message
    return " ".join(str(text).split())


def as_byok_error(
    exc: BaseException, resource_id: str, doing: str, waited: bool = False
) -> BaseException:
    """The one-line project error for a permanent Azure failure while `doing` something to
    `resource_id` (a refusal, a failed operation, or, when the caller `waited` for access to
    propagate, access still not effective); transient ones and others unchanged."""
    if isinstance(exc, ByokError) or not isinstance(exc, HttpResponseError):
        return exc
    if is_transient_azure(exc):
        return exc
    code = error_code(exc) or "Failed"
    if is_failed_operation(exc):
        cause = f": {code}: {_message(exc)}" if exc.error else " (provisioningState Failed)"
        return ByokOperationFailed(resource_id, f"{doing} ended Failed{cause}")
    if waited and is_propagation_delay(exc):
        return PropagationTimedOut(
            resource_id, f"{doing}: access still not effective: {code}: {_message(exc)}"
        )
    if exc.status_code is not None and 400 <= exc.status_code < 500:
        return ServiceRefused(resource_id, f"{doing} refused: {code}: {_message(exc)}")
    return exc


@contextmanager
def named_failure(resource_id: str, doing: str, waited: bool = False) -> Iterator[None]:
    """Raise a permanent Azure failure of the block as the project's one-line error naming
    `resource_id` and what was being done (`as_byok_error`); transient ones pass unchanged."""
    try:
        yield
    except HttpResponseError as exc:
        named = as_byok_error(exc, resource_id, doing, waited)
        if named is exc:
            raise
        raise named from exc


def or_none(read: Callable[[], T]) -> T | None:
    """`read()`, or None when the resource does not exist (404)."""
    try:
        return read()
    except ResourceNotFoundError:
        return None


def one_line(exc: BaseException) -> str:
    """Why something failed, in one line for a report row: a project error's reason, an
    Azure error's code and message, or any other error's type and text."""
    if isinstance(exc, ResourceError):
        return exc.reason
    if isinstance(exc, HttpResponseError):
        return f"{error_code(exc) or exc.status_code}: {_message(exc)}"
    if isinstance(exc, ByokError):
        return str(exc)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
