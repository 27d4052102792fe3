"""Cloud Object Storage for the emulator: moto's S3 in server mode on loopback (plain HTTP),
reached with HMAC credentials, plus the emulator's own access to it (SoftLayer reads imports
and writes exports here)."""

from __future__ import annotations

import io
import logging
import re
import urllib.request
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

# IBM location constraints: regional "<region>-<class>", cross-region "<geo>-<class>".
STORAGE_CLASSES = ("standard", "vault", "cold", "smart", "flex", "onerate_active")
COS_URI = re.compile(r"^cos://(?P<region>[a-z0-9-]+)/(?P<bucket>[^/]+)/(?P<key>.+)$")


def regional_location(location: str | None, region: str) -> bool:
    """Whether a bucket's LocationConstraint makes it a regional bucket in `region`."""
    return location is not None and location in (
        region,
        *(f"{region}-{storage}" for storage in STORAGE_CLASSES),
    )


class CosServer:
    """moto S3 on a free loopback port; `reset()` forgets every bucket."""

    def __init__(self, access_key_id: str, secret_access_key: str) -> None:
        self.access_key_id, self.secret_access_key = access_key_id, secret_access_key
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self._client: Any = None

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
        """Forget every bucket and object (moto's reset API)."""
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
        return io.BufferedReader(_RangedObject(self.client, bucket, key, size), 256 * 1024)


class _RangedObject(io.RawIOBase):
    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

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
