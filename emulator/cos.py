"""Cloud Object Storage for the emulator: moto's S3 WSGI application, served by the emulator's
own application on a loopback port of its own (plain HTTP, reached with HMAC credentials),
plus the emulator's own access to it (SoftLayer reads imports and writes exports here)."""

from __future__ import annotations

import io
import re
from typing import Any
from xml.sax.saxutils import escape

import boto3
from botocore.config import Config
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.werkzeug_app import create_backend_app

from emulator.faults import Fault

# IBM location constraints: regional "<region>-<class>", cross-region "<geo>-<class>".
STORAGE_CLASSES = ("standard", "vault", "cold", "smart", "flex", "onerate_active")
COS_URI = re.compile(r"^cos://(?P<region>[a-z0-9-]+)/(?P<bucket>[^/]+)/(?P<key>.+)$")
# The access key id in SigV4's `Credential=<key>/<date>/…` (header or presigned query).
_CREDENTIAL = re.compile(r"Credential=([^/%]+)(?:/|%2F)", re.IGNORECASE)
S3_FAULT_CODES = {429: "SlowDown", 500: "InternalError", 503: "ServiceUnavailable"}


def regional_location(location: str | None, region: str) -> bool:
    """Whether a bucket's LocationConstraint makes it a regional bucket in `region`."""
    return location is not None and location in (
        region,
        *(f"{region}-{storage}" for storage in STORAGE_CLASSES),
    )


def s3_error(fault: Fault, path: str) -> bytes:
    """An injected fault as S3's XML error document."""
    code = fault.code or S3_FAULT_CODES.get(fault.status, "InjectedFault")
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
        f"{escape(code)}</Code><Message>{escape(fault.message or 'Injected by the emulator.')}"
        f"</Message><Resource>{escape(path)}</Resource></Error>"
    ).encode()


class _RangedObject(io.RawIOBase):
    """A seekable raw reader of one object: each read is a ranged GET."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._size, self._pos + len(view))
        if end <= self._pos:
            return 0
        body = self._client.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end - 1}"
        )["Body"].read()
        view[: len(body)] = body
        self._pos += len(body)
        return len(body)


class CosServer:
    """moto's S3 as a WSGI application (`app`), which the emulator serves at `endpoint`;
    `reset()` forgets every bucket. Its requests pass the emulator's fault layer and land in
    its request log like every other."""

    def __init__(self, access_key_id: str, secret_access_key: str) -> None:
        self.access_key_id, self.secret_access_key = access_key_id, secret_access_key
        self._s3 = create_backend_app("s3")
        self.endpoint = ""  # set by the emulator once it listens
        self._client: Any = None
        self._accounts: dict[str, str] = {}  # HMAC access key id -> moto account id

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        """moto's S3, in the moto account of the request's HMAC key: an account lists and
        owns its own buckets; bucket names stay global, as IBM COS's are."""
        auth = environ.get("HTTP_AUTHORIZATION", "") + environ.get("QUERY_STRING", "")
        match = _CREDENTIAL.search(auth)
        account = self._accounts.get(match[1]) if match else None
        if account:
            environ["HTTP_X_MOTO_ACCOUNT_ID"] = account
        return self._s3(environ, start_response)

    def add_account(self, access_key_id: str) -> None:
        """Give an IBM account's HMAC key its own moto account (the first one moto's
        default)."""
        account = f"{DEFAULT_ACCOUNT_ID[:-4]}{len(self._accounts):04d}"
        self._accounts[access_key_id] = DEFAULT_ACCOUNT_ID if not self._accounts else account

    def reset(self) -> None:
        """Forget every bucket, object and account (moto's reset, in process)."""
        moto_api_backend.reset()
        self._accounts.clear()

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
        return io.BufferedReader(_RangedObject(self.client, bucket, key, size), 256 * 1024)
