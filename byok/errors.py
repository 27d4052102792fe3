"""One error family: every failure the flows report on purpose is a `ByokError`, whose
message is one line naming what failed (a field and its value, or a resource id) and why.
A run that fails with one of these needs no traceback to be understood."""

from __future__ import annotations

from typing import Any


class ByokError(Exception):
    """Root of the project's errors."""


class InvalidRequest(ByokError, ValueError):
    """A request broke a rule; nothing was written."""

    def __init__(self, field: str, value: Any, rule: str) -> None:
        super().__init__(f"{field} = {value!r}: {rule}")
        self.field, self.value, self.rule = field, value, rule

    def __reduce__(self) -> tuple[Any, ...]:  # persisted results are pickled
        return type(self), (self.field, self.value, self.rule)


class ResourceError(ByokError):
    """Something went wrong with one resource: `resource_id: reason`."""

    def __init__(self, resource_id: str, reason: str) -> None:
        super().__init__(f"{resource_id}: {reason}")
        self.resource_id, self.reason = resource_id, reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.resource_id, self.reason)


class ServiceRefused(ResourceError):
    """The service refused a write for a reason no retry changes (a rule, a permission,
    a firewall)."""


class OperationFailed(ResourceError):
    """A long-running operation ended Failed (the cause named)."""


class PropagationTimedOut(ResourceError):
    """An effect (a grant, a replication) did not take hold in the time allowed."""


class VerificationFailed(ResourceError):
    """The resource exists but is not what the procedure promises (say, not encrypted with
    the customer key)."""


class ConcurrentRun(ResourceError):
    """Another run is working on the same resource."""

    def __init__(self, resource_id: str, reason: str = "another run is working on this resource"):
        super().__init__(resource_id, reason)


class RotationIncomplete(ByokError):
    """A fleet operation finished, but some of its rows failed (each named)."""

    def __init__(self, failed: list[str], total: int) -> None:
        shown = "; ".join(failed[:10]) + (
            f"; and {len(failed) - 10} more" if len(failed) > 10 else ""
        )
        super().__init__(f"{len(failed)} of {total} rows failed: {shown}")
        self.failed, self.total = failed, total

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.failed, self.total)
