"""The emulator's HTTPS servers: one main origin (Entra, ARM, admin API) and one origin per
Key Vault, all on loopback, with fault injection and a request log in front of the routes."""

from __future__ import annotations

import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from emulator.cos import CosServer
from emulator.faults import Fault, FaultInjector
from emulator.http import HttpError, Request, Response, Router
from emulator.requestlog import LoggedRequest, RequestLog
from emulator.services.arm.models import ArmModel
from emulator.services.ibm_iam.models import IbmIdentity
from emulator.state import EmulatorState, Identity
from emulator.tls import TlsFiles, make_tls_files

ADMIN_PREFIX = "/_emulator"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, emulator: Emulator, port: int, ports: str) -> None:
        self.emulator, self.ports = emulator, ports
        super().__init__(("127.0.0.1", port), _Handler)
        self.socket = emulator.ssl_context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(120)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log records what happened."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            self.close_connection = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request.parse(
            self.command, self.path, headers, body, self.server.server_address[1]
        )
        response = self.server.emulator.handle(request, self.server.ports)
        if response is None:  # connection reset
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.request.close()
            return
        payload, out_headers = response.encode()
        self.send_response(response.status)
        out_headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _serve


def _close(server: _Server) -> None:
    server.shutdown()
    server.server_close()


class Emulator:
    """The local cloud: start it, point clients at `base_url` trusting `ca_path`, reset it
    between tests, stop it at the end."""

    def __init__(
        self, port: int = 0, state_dir: Path | None = None, identity: Identity | None = None
    ) -> None:
        self.identity = identity or Identity()
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="byok-emulator-")
        self.state_dir = Path(state_dir or self._tmp.name)  # type: ignore[union-attr]
        self.tls: TlsFiles = make_tls_files(self.state_dir / "tls")
        self.ssl_context = self.tls.server_context()
        self.requests = RequestLog()
        self._port = port
        self._servers: dict[int, _Server] = {}
        self._lock = threading.Lock()
        self.state: EmulatorState | None = None
        self.base_url = ""
        self.ibm_identity = IbmIdentity()
        self.cos = CosServer(
            self.ibm_identity.cos_hmac_access_key_id, self.ibm_identity.cos_hmac_secret_access_key
        )

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Emulator:
        """Listen on the main port and build a fresh state."""
        self.cos.start()
        main_port = self._listen("main", self._port)
        self.base_url = f"https://127.0.0.1:{main_port}"
        self.reset()
        return self

    def stop(self) -> None:
        """Stop every listener."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.shutdown()
            server.server_close()
        self.cos.stop()
        if self._tmp:
            self._tmp.cleanup()

    def reset(self) -> None:
        """Forget every resource, fault and logged request; close vault origins."""
        main = self.base_url.rsplit(":", 1)[1]
        with self._lock:
            extra = [p for p in self._servers if str(p) != main]
        for port in extra:
            self._unlisten(port)
        self.requests.clear()
        self.cos.reset()
        self.state = EmulatorState(
            self.identity,
            self.base_url,
            lambda: self._listen("vault"),
            self._unlisten,
            cos=self.cos,
            ca_pem=self.ca_path.read_bytes(),
        )

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self, ports: str, port: int = 0) -> int:
        server = _Server(self, port, ports)
        actual = server.server_address[1]
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"emulator-{ports}-{actual}",
            daemon=True,
        ).start()
        with self._lock:
            self._servers[actual] = server
        return actual

    def _unlisten(self, port: int) -> None:
        with self._lock:
            server = self._servers.pop(port, None)
        if server is not None:
            threading.Thread(target=_close, args=(server,), daemon=True).start()

    # -- shortcuts for tests and the CLI -----------------------------------------------------
    @property
    def ca_path(self) -> Path:
        """The CA certificate clients must trust."""
        return self.tls.ca_cert

    @property
    def faults(self) -> FaultInjector:
        """The fault injector of the current state."""
        assert self.state is not None
        return self.state.faults

    @property
    def arm(self) -> ArmModel:
        """The ARM model of the current state."""
        assert self.state is not None
        return self.state.arm

    def endpoints(self) -> dict[str, str]:
        """What a client needs to reach the emulator (no secret)."""
        return {
            "arm": self.base_url + "/",
            "authority": self.base_url,
            "tenant_id": self.identity.tenant_id,
            "subscription_id": self.identity.subscription_id,
            "client_id": self.identity.client_id,
            "ca_bundle": str(self.ca_path),
            "ibm_iam": self.base_url,
            "ibm_key_protect": self.base_url,
            "ibm_softlayer": self.base_url + "/rest/v3.1",
            "ibm_cos": self.cos.endpoint,
            "ibm_account_id": self.ibm_identity.account_id,
            "ibm_region": self.ibm_identity.region,
            "ibm_key_protect_instance": self.ibm_identity.key_protect_instance,
            "ibm_cos_instance": self.ibm_identity.cos_instance,
            "ibm_cos_hmac_access_key_id": self.ibm_identity.cos_hmac_access_key_id,
        }

    # -- serving ---------------------------------------------------------------------------
    def handle(self, request: Request, ports: str) -> Response | None:
        """Serve one request: admin API, faults, then the routes; log it."""
        state = self.state
        assert state is not None
        response: Response | None
        if request.path.startswith(ADMIN_PREFIX) and ports == "main":
            return self._admin(request, state)
        if state.faults.take("reset", request.method, request.path):
            response = None
        else:
            response = self._faulted(request, state) or self._route(state.router, request, ports)
            response = self._lost(request, state, response)
        self.requests.append(
            LoggedRequest(
                time.time(),
                request.method,
                request.path,
                "&".join(f"{k}={v}" for k, v in request.query.items()),
                response.status if response else 0,
                request.port,
            )
        )
        return response

    @classmethod
    def _lost(cls, request: Request, state: EmulatorState, served: Response) -> Response | None:
        """After serving: the answer dropped (`reset-after`) or replaced (`status-after`)."""
        if state.faults.take("reset-after", request.method, request.path):
            return None
        fault = state.faults.take("status-after", request.method, request.path)
        return served if fault is None else cls._fault_response(fault)

    def _faulted(self, request: Request, state: EmulatorState) -> Response | None:
        latency = state.faults.take("latency", request.method, request.path)
        if latency:
            time.sleep(latency.seconds)
        fault = state.faults.take("status", request.method, request.path)
        return None if fault is None else self._fault_response(fault)

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        code = fault.code or {
            429: "TooManyRequests",
            500: "InternalServerError",
            503: "ServiceUnavailable",
        }.get(fault.status, "InjectedFault")
        return HttpError(
            fault.status, code, fault.message or "Injected by the emulator.", headers
        ).response()

    @staticmethod
    def _route(router: Router, request: Request, ports: str) -> Response:
        try:
            return router.dispatch(request, ports)
        except HttpError as exc:
            return exc.response()
        except Exception as exc:  # an emulator bug: answer like ARM would, never a traceback
            return HttpError(
                500, "InternalServerError", f"The emulator failed: {type(exc).__name__}: {exc}"
            ).response()

    def _admin(self, request: Request, state: EmulatorState) -> Response:
        path = request.path[len(ADMIN_PREFIX) :].rstrip("/")
        try:
            if path == "/faults" and request.method == "POST":
                fault = state.faults.add(Fault(**request.json()))
                return Response(201, fault.to_json())
            if path == "/faults" and request.method == "GET":
                return Response(200, [f.to_json() for f in state.faults.list()])
            if path == "/faults" and request.method == "DELETE":
                state.faults.clear()
                return Response(204)
            if path == "/reset" and request.method == "POST":
                self.reset()
                return Response(204)
            if path == "/requests" and request.method == "GET":
                found = self.requests.find(request.query.get("method"), request.query.get("path"))
                return Response(200, [e.to_json() for e in found])
            if path == "/endpoints" and request.method == "GET":
                return Response(200, self.endpoints())
        except (TypeError, ValueError) as exc:
            return HttpError(400, "BadRequest", str(exc)).response()
        return HttpError(404, "UnsupportedOperation", f"No admin operation {path!r}.").response()
