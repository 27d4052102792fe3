"""Content negotiation of the emulated API servers: kubectl (client-go 1.32) sends core
objects it builds itself (`kubectl create secret generic`, `create namespace`) as protobuf
(`Content-Type: application/vnd.kubernetes.protobuf`, kubernetes/kubernetes#125314) and
accepts `application/vnd.kubernetes.protobuf,application/json`. The emulator reads such a
body and always answers JSON, which the API server does when the client lists JSON as a
fallback; a client that accepts no JSON gets 406, as from the API server.

A protobuf body is the `k8s\\x00` magic and a runtime.Unknown (1 typeMeta {1 apiVersion,
2 kind}, 2 raw, 3 contentEncoding, 4 contentType) whose `raw` is the object
(https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding). Read here:
Secret (1 metadata, 2 data, 3 type, 4 stringData, 5 immutable) and Namespace (1 metadata),
ObjectMeta's name 1, generateName 2, namespace 3, resourceVersion 6, labels 11 and
annotations 12 (the `protobuf:` tags of k8s.io/api/core/v1/types.go and
apimachinery/pkg/apis/meta/v1/types.go); other fields are skipped."""

from __future__ import annotations

import base64
from typing import Any

from emulator.http import Request
from emulator.services.kubernetes.status import KubeError

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
JSON_TYPES = frozenset({"application/json", "application/*", "*/*"})
META_STRINGS = {1: "name", 2: "generateName", 3: "namespace", 6: "resourceVersion"}
META_MAPS = {11: "labels", 12: "annotations"}


def check_accept(request: Request) -> None:
    """406 unless the client accepts JSON (or names no type)."""
    accept = request.headers.get("accept", "")
    types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if accept.strip() and not types & JSON_TYPES:
        raise KubeError(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )


def body(request: Request) -> dict[str, Any]:
    """The request's object, from JSON or protobuf."""
    if request.headers.get("content-type", "").split(";", 1)[0].strip() != PROTOBUF:
        return request.json()
    if not request.body.startswith(MAGIC):
        raise KubeError(400, "BadRequest", "the protobuf body lacks the k8s magic prefix")
    unknown = _fields(request.body[len(MAGIC) :])
    type_meta = _fields(_one(unknown, 1))
    api_version, kind = _text(type_meta, 1), _text(type_meta, 2)
    decode = _KINDS.get(kind)
    if decode is None:
        raise KubeError(415, "UnsupportedMediaType", f"cannot read a {kind} sent as protobuf")
    return {"apiVersion": api_version, "kind": kind, **decode(_fields(_one(unknown, 2)))}


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A message's fields in order: (number, varint value or bytes)."""
    out: list[tuple[int, int | bytes]] = []
    at = 0
    try:
        while at < len(buf):
            key, at = _varint(buf, at)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, at = _varint(buf, at)
                out.append((number, value))
            elif wire == 2:
                size, at = _varint(buf, at)
                out.append((number, buf[at : at + size]))
                at += size
            elif wire in (1, 5):  # fixed 64 / 32 bits: no field read here has them
                at += 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire}")
    except (IndexError, ValueError) as exc:
        raise KubeError(400, "BadRequest", f"the protobuf body is malformed: {exc}") from None
    return out


def _one(fields: list[tuple[int, int | bytes]], number: int) -> bytes:
    return next((v for n, v in fields if n == number and isinstance(v, bytes)), b"")


def _text(fields: list[tuple[int, int | bytes]], number: int) -> str:
    return _one(fields, number).decode()


def _map(fields: list[tuple[int, int | bytes]], number: int) -> dict[str, bytes]:
    entries = [_fields(v) for n, v in fields if n == number and isinstance(v, bytes)]
    return {_text(e, 1): _one(e, 2) for e in entries}


def _metadata(fields: list[tuple[int, int | bytes]]) -> dict[str, Any]:
    meta: dict[str, Any] = {k: _text(fields, n) for n, k in META_STRINGS.items()}
    meta = {k: v for k, v in meta.items() if v}
    for number, key in META_MAPS.items():
        if values := _map(fields, number):
            meta[key] = {k: v.decode() for k, v in values.items()}
    return meta


def _secret(fields: list[tuple[int, int | bytes]]) -> dict[str, Any]:
    secret: dict[str, Any] = {"metadata": _metadata(_fields(_one(fields, 1)))}
    if data := _map(fields, 2):
        secret["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    if string_data := _map(fields, 4):
        secret["stringData"] = {k: v.decode() for k, v in string_data.items()}
    if kind := _text(fields, 3):
        secret["type"] = kind
    immutable = [v for n, v in fields if n == 5]
    if immutable:
        secret["immutable"] = bool(immutable[-1])
    return secret


def _namespace(fields: list[tuple[int, int | bytes]]) -> dict[str, Any]:
    return {"metadata": _metadata(_fields(_one(fields, 1)))}


_KINDS = {"Secret": _secret, "Namespace": _namespace}
