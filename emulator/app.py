"""The emulator's one WSGI application, behind every port it listens on: the admin API, then
one fault layer, ARM throttling and the services (the routes, or moto's S3 for COS), with
one request log for all of them."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from emulator.cos import s3_error
from emulator.faults import Fault
from emulator.http import HttpError, Request, Response
from emulator.requestlog import LoggedRequest
from emulator.serving import ORIGIN, drop_connection
from emulator.state import EmulatorState
from emulator.throttle_admin import THROTTLE_ADMIN, throttle_admin
from emulator.throttling import Drawn, principal_of, subscription_of

if TYPE_CHECKING:
    from emulator.server import Emulator

ADMIN_PREFIX = "/_emulator"
Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body
StartResponse = Callable[..., Any]
FAULT_CODES = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}


ADMIN_UNAUTHORIZED = HttpError(
    401,
    "Unauthorized",
    "The admin API needs the token `byok emulator serve` printed, as "
    "'Authorization: Bearer <token>' (it is in the published endpoints.json).",
)


def _admin_caller(environ: dict[str, Any], token: str) -> bool:
    """Whether the request carries the emulator's admin token (compared in constant time)."""
    given = environ.get("HTTP_AUTHORIZATION", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _encode(response: Response) -> Answer:
    payload, headers = response.encode()
    headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
    return response.status, list(headers.items()), payload


class Application:
    """Serves `emulator`'s origins: the listener a request arrived on names its origin
    ("main": Entra, ARM, admin API and IBM's APIs; "vault": one Key Vault; "cos": COS)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        emulator, state = self.emulator, self.emulator.state
        assert state is not None
        port = int(environ["SERVER_PORT"])
        origin = environ[ORIGIN]
        method = environ["REQUEST_METHOD"].upper()
        path = urlsplit(environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")).path
        if (
            origin == "main"
            and path.startswith(ADMIN_PREFIX)
            and not _admin_caller(environ, emulator.admin_token)
        ):
            answer: Answer | None = _encode(ADMIN_UNAUTHORIZED.response())
        elif origin == "main" and path.rstrip("/") == THROTTLE_ADMIN:
            answer = _encode(throttle_admin(emulator, Request.from_environ(environ)))
        elif origin == "main" and path.startswith(ADMIN_PREFIX):
            answer = _encode(emulator.admin(Request.from_environ(environ)))
        else:
            answer, bucket = self._layers(environ, origin, method, path, state)
            emulator.requests.append(
                LoggedRequest(
                    time.time(),
                    method,
                    path,
                    environ.get("QUERY_STRING", ""),
                    answer[0] if answer else 0,
                    port,
                    origin,
                    bucket,
                )
            )
        if answer is None:
            drop_connection(environ)
            return []
        status, headers, body = answer
        start_response(f"{status} {_phrase(status)}", headers)
        return [body]

    def _layers(
        self, environ: dict[str, Any], origin: str, method: str, path: str, state: EmulatorState
    ) -> tuple[Answer | None, str]:
        """The fault layer around the service: the answer (None: drop the connection) and
        the throttling bucket drawn from."""
        faults = state.faults
        if faults.take("reset", method, path):
            return None, ""
        latency = faults.take("latency", method, path)
        if latency:
            time.sleep(latency.seconds)
        fault = faults.take("status", method, path)
        if fault is not None:
            return self._fault(fault, origin, path), ""
        answer, bucket = self._serve(environ, origin, state)
        if faults.take("reset-after", method, path):
            return None, bucket
        fault = faults.take("status-after", method, path)
        return (answer if fault is None else self._fault(fault, origin, path)), bucket

    def _serve(
        self, environ: dict[str, Any], origin: str, state: EmulatorState
    ) -> tuple[Answer, str]:
        if origin == "cos":
            return self._moto(environ), ""
        request = Request.from_environ(environ)
        drawn = self._draw(request, origin)
        if drawn is not None and drawn.retry_after is not None:
            return _encode(drawn.refusal().response()), drawn.bucket
        try:
            response = state.router.dispatch(request, origin)
        except HttpError as exc:
            response = exc.response()
        except Exception as exc:  # an emulator bug: answer like ARM would, never a traceback
            response = HttpError(
                500, "InternalServerError", f"The emulator failed: {type(exc).__name__}: {exc}"
            ).response()
        status, headers, body = _encode(response)
        if drawn is None:
            return (status, headers, body), ""
        return (status, headers + list(drawn.headers.items()), body), drawn.bucket

    def _draw(self, request: Request, origin: str) -> Drawn | None:
        """ARM's throttling, when on, for ARM requests of an identifiable caller."""
        throttle = self.emulator.throttle
        if throttle is None or origin != "main":
            return None
        subscription = subscription_of(request.path)
        principal = principal_of(request.headers.get("authorization", ""))
        if subscription is None or principal is None:
            return None
        return throttle.take(subscription, principal, request.method, request.path)

    def _moto(self, environ: dict[str, Any]) -> Answer:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            started[:] = [status, headers]
            return lambda data: None

        chunks = self.emulator.cos.app(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        return int(started[0].split(" ", 1)[0]), list(started[1]), body

    @staticmethod
    def _fault(fault: Fault, origin: str, path: str) -> Answer:
        """An injected error answer: S3's XML for COS, ARM's JSON elsewhere."""
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        if origin == "cos":
            headers["Content-Type"] = "application/xml"
            return fault.status, list(headers.items()), s3_error(fault, path)
        code = fault.code or FAULT_CODES.get(fault.status, "InjectedFault")
        message = fault.message or "Injected by the emulator."
        return _encode(HttpError(fault.status, code, message, headers).response())
