"""Cloud Object Storage for the emulator: moto's S3 in server mode on loopback (plain HTTP),
reached with HMAC credentials, plus the emulator's own access to it (SoftLayer reads imports
and writes exports here). Requests pass the emulator's `status` fault rules and are logged."""

from __future__ import annotations

import io
import logging
import re
import urllib.request
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

import boto3
from botocore.config import Config
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from byok.ibm_cos_io import RangedObject
from emulator.faults import FaultInjector

# IBM location constraints: regional "<region>-<class>", cross-region "<geo>-<class>".
STORAGE_CLASSES = ("standard", "vault", "cold", "smart", "flex", "onerate_active")
COS_URI = re.compile(r"^cos://(?P<region>[a-z0-9-]+)/(?P<bucket>[^/]+)/(?P<key>.+)$")


def regional_location(location: str | None, region: str) -> bool:
    """Whether a bucket's LocationConstraint makes it a regional bucket in `region`."""
    return location is not None and location in (
        region,
        *(f"{region}-{storage}" for storage in STORAGE_CLASSES),
    )


StartResponse = Callable[..., Any]
S3_FAULT_CODES = {429: "SlowDown", 500: "InternalError", 503: "ServiceUnavailable"}


class _FaultingMotoServer(ThreadedMotoServer):
    """moto's server with a WSGI layer in front: fault rules, then the request log."""

    def __init__(self, cos: CosServer) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._cos = cos

    def _server_entry(self) -> None:  # moto's own, with the app wrapped
        app = _FaultingApp(DomainDispatcherApplication(create_backend_app), self._cos)
        self._server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


class _FaultingApp:
    def __init__(self, app: Any, cos: CosServer) -> None:
        self.app, self.cos = app, cos

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        fault = self.cos.faults.take("status", method, path) if self.cos.faults else None
        self.cos.requests.append((method, path, fault.status if fault else 0))
        if fault is None:
            return self.app(environ, start_response)
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        code = fault.code or S3_FAULT_CODES.get(fault.status, "InjectedFault")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
            f"{escape(code)}</Code><Message>{escape(fault.message or 'Injected by the emulator.')}"
            f"</Message><Resource>{escape(path)}</Resource></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        if fault.retry_after is not None:
            headers.append(("Retry-After", f"{fault.retry_after:g}"))
        start_response(f"{fault.status} {HTTPStatus(fault.status).phrase}", headers)
        return [body]


class CosServer:
    """moto S3 on a free loopback port; `reset()` forgets every bucket. `faults` (the current
    emulator state's rules) apply to its requests; `requests` logs (method, path, fault
    status or 0)."""

    def __init__(self, access_key_id: str, secret_access_key: str) -> None:
        self.access_key_id, self.secret_access_key = access_key_id, secret_access_key
        self._server = _FaultingMotoServer(self)
        self.endpoint = ""
        self._client: Any = None
        self.faults: FaultInjector | None = None
        self.requests: list[tuple[str, str, int]] = []

    def start(self) -> None:
        """Listen (quietly: moto logs every request through werkzeug)."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop listening."""
        if self.endpoint:
            self._server.stop()
            self.endpoint = ""

    def reset(self) -> None:
        """Forget every bucket, object and logged request (moto's reset API)."""
        self.requests.clear()
        request = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    @property
    def client(self) -> Any:
        """The emulator's own S3 client."""
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                region_name="us-east-1",
                config=Config(retries={"max_attempts": 2}),
            )
        return self._client

    def location(self, bucket: str) -> str | None:
        """A bucket's LocationConstraint (None: created without one)."""
        return self.client.get_bucket_location(Bucket=bucket).get("LocationConstraint")

    def open(self, bucket: str, key: str) -> io.BufferedReader:
        """A seekable reader of one object (ranged GETs; nothing downloaded up front)."""
        size = self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        return io.BufferedReader(RangedObject(self.client, bucket, key, size), 256 * 1024)
