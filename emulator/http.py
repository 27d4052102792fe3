"""The HTTP layer shared by every service: requests, responses, routing, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One parsed request, as the routes see it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    port: int  # the local port the request arrived on (one per Key Vault)
    params: dict[str, str] = field(default_factory=dict)  # filled by the router

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> Request:
        """Build a request from a WSGI environ (the path as sent, not percent-decoded)."""
        parts = urlsplit(environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/"))
        query = {
            k: v[-1]
            for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()
        }
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = environ[key]
        stream = environ["wsgi.input"]
        if environ.get("wsgi.input_terminated"):  # chunked
            body = stream.read()
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = stream.read(length) if length else b""
        port = int(environ["SERVER_PORT"])
        return cls(environ["REQUEST_METHOD"].upper(), parts.path, query, headers, body, port)

    @property
    def host(self) -> str:
        """The Host header: what the client used to reach us (echoed into URLs we return)."""
        return self.headers.get("host", f"127.0.0.1:{self.port}")

    def json(self) -> Any:
        """The body as JSON, or an HttpError naming the problem."""
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HttpError(
                400, "InvalidRequestContent", f"The request body is not JSON: {exc}"
            ) from exc

    def form(self) -> dict[str, str]:
        """The body as an url-encoded form."""
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Response:
    """What a route answers."""

    status: int
    body: Any = None  # JSON-serialisable, bytes, or None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        """The body bytes and headers, with Content-Type for JSON bodies."""
        headers = dict(self.headers)
        if self.body is None:
            return b"", headers
        if isinstance(self.body, bytes):
            return self.body, headers
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return json.dumps(self.body).encode(), headers


class HttpError(Exception):
    """An error answer in the services' usual shape: {"error": {"code", "message"}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        inner: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.inner = inner

    def response(self) -> Response:
        """This error as a response."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return Response(self.status, {"error": error}, dict(self.headers))


Handler = Callable[[Request], Response]


@dataclass
class Route:
    """A method and a path pattern (`{name}` matches one segment, `{name:path}` the rest)."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    ports: str  # "main" or "vault"


def compile_path(template: str) -> re.Pattern[str]:
    """Turn '/x/{a}/y/{b:path}' into a case-insensitive anchored regex with named groups."""

    def group(match: re.Match[str]) -> str:
        name, _, kind = match.group(1).partition(":")
        return f"(?P<{name}>.+)" if kind == "path" else f"(?P<{name}>[^/]+)"

    return re.compile("^" + re.sub(r"\{([^}]+)\}", group, template) + "/?$", re.IGNORECASE)


class Router:
    """Routes by method and path; the first match wins."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, ports: str = "main") -> None:
        """Register a handler for `method` on paths matching `template`."""
        self.routes.append(Route(method.upper(), compile_path(template), handler, ports))

    def dispatch(self, request: Request, ports: str) -> Response:
        """Find the route and run it; errors become error responses."""
        allowed = False
        for route in self.routes:
            if route.ports != ports:
                continue
            match = route.pattern.match(request.path)
            if not match:
                continue
            if route.method != request.method:
                allowed = True
                continue
            request.params = match.groupdict()
            try:
                return route.handler(request)
            except HttpError as exc:
                return exc.response()
        if allowed:
            return HttpError(
                405,
                "UnsupportedOperation",
                f"The emulator does not support {request.method} on '{request.path}'.",
            ).response()
        return HttpError(
            404,
            "UnsupportedOperation",
            f"The emulator has no operation for {request.method} '{request.path}'.",
        ).response()
