"""Failure answers of the emulated Kubernetes API servers."""

from __future__ import annotations

from emulator.http import HttpError, Response


class KubeError(HttpError):
    """A Kubernetes `Status` failure answer."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, reason, message)

    def response(self) -> Response:
        return Response(
            self.status,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": self.message,
                "reason": self.code,
                "code": self.status,
            },
        )
