"""werkzeug's threaded WSGI server as the emulator needs it: HTTP/1.1 keep-alive, Nagle off,
the TLS handshake in the connection's own thread, and connections an application can drop
with a TCP reset instead of answering."""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.wsgi import LimitedStream

DROP = "emulator.drop"  # environ key: set by drop_connection()
ORIGIN = "emulator.origin"  # environ key: the listener's origin name


def drop_connection(environ: dict[str, Any]) -> None:
    """Make the server close this request's connection with a TCP reset (SO_LINGER 0) and
    no answer: a lost answer or a network failure, as the client sees it."""
    connection: socket.socket = environ["werkzeug.socket"]
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    environ[DROP] = True


class _Handler(MotoRequestHandler):
    """werkzeug's handler (with moto's header handling, which COS needs) serving one
    connection: werkzeug's own `run_wsgi` closes every connection after one answer
    ("Always close the connection" in werkzeug.serving), so this one answers with a
    Content-Length, drains what the application left unread, and keeps the connection."""

    protocol_version = "HTTP/1.1"
    server: Listener

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(120)
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
        super().setup()

    def handle(self) -> None:
        if not getattr(self, "close_connection", False):
            super().handle()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Quiet: the emulator's request log records what happened."""

    def log_error(self, format: str, *args: Any) -> None:
        """Quiet: failed handshakes and dropped connections are the clients' business."""

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        environ[ORIGIN] = self.server.origin
        if not environ.get("wsgi.input_terminated"):  # not chunked: bound the body
            size = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"] = LimitedStream(self.rfile, size)  # type: ignore[arg-type]
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            answer[:] = [status, headers]
            return lambda data: None  # the legacy write() callable: unused by our apps

        try:
            chunks = self.server.app(environ, start_response)
            try:
                body = b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()
        except Exception:  # an emulator bug: the applications answer errors themselves
            self.close_connection = True
            body, answer[:] = b"", ["500 Internal Server Error", []]
        if environ.get(DROP):
            self.close_connection = True
            self.connection.close()  # closes for real (a reset) when the handler's files close
            return
        while environ["wsgi.input"].read(65536):  # what the application left unread
            pass
        status, headers = answer
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        length = str(len(body))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # what a GET would carry
            elif name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Listener(ThreadedWSGIServer):
    """One loopback port served by `app`, which finds `origin` in the environ; TLS when
    `context` is given."""

    request_queue_size = 128
    block_on_close = False  # closing never waits for idle keep-alive connections

    def __init__(
        self, app: Any, origin: str, port: int = 0, context: ssl.SSLContext | None = None
    ) -> None:
        self.origin = origin
        super().__init__("127.0.0.1", port, app, _Handler)
        if context is not None:
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
            self.ssl_context = context
