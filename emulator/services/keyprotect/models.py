"""Key Protect state: instances with root and standard keys, their versions, and envelope
encryption (wrap, unwrap, rewrap) with real AES-GCM under each key version.

A root key can be disabled (state 2, Suspended) and enabled again (state 1, Active): while
suspended its wrap, unwrap, rewrap and rotate answer 422 KEY_INVALID_STATE_ERR "Key is not in
a valid state", and services that unwrap with it (server-protect) fail
(https://cloud.ibm.com/docs/key-protect?topic=key-protect-disable-keys,
https://cloud.ibm.com/docs/key-protect?topic=key-protect-error-messages).

A root key rotates at most once an hour: a second rotation within the hour answers 409
KEY_ROTATION_NOT_PERMITTED "This root key has been rotated within the last hour. Only one
'rotate' action per hour is permitted" (the same error-messages page, #error-messages-key-
rotation-not-permitted; the body as in IBM/keyprotect-go-client's keys_test.go). The hour is
counted on the emulator's clock (`clock`), which `POST /_emulator/clock` advances."""

from __future__ import annotations

import base64
import binascii
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.clock import Clock
from emulator.http import HttpError, Response
from emulator.services.ibm_iam.models import (
    READ_ROLES,
    WRITE_ROLES,
    Caller,
    IamModel,
    now_iso,
    target,
)

KEY_TYPE = "application/vnd.ibm.kms.key+json"
ERROR_TYPE = "application/vnd.ibm.kms.error+json"
# Key policies (https://cloud.ibm.com/docs/key-protect?topic=key-protect-set-rotation-policy;
# the shape of IBM/keyprotect-go-client policy.go): a rotation policy of a root key rotates it
# every `interval_month` months (1 to 12).
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"
CIPHERTEXT_MAGIC = b"KPE1"  # then version uuid (16), nonce (12), AES-GCM ciphertext + tag
MAX_PLAINTEXT = 7740
ROOT_KEY_SIZES = (16, 24, 32)
ACTIVE, SUSPENDED = 1, 2  # Key Protect key states
DEK_SIZE = 32
ROTATION_INTERVAL = 3600.0  # seconds between two rotations of a key


class KeyProtectError(HttpError):
    """A Key Protect error: an error collection with one resource and its reasons."""

    def response(self) -> Response:
        reason = {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
        }
        body = {
            "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
            "resources": [
                {
                    "errorMsg": f"{_TITLES.get(self.status, 'Error')}: {self.message}",
                    "reasons": [reason],
                }
            ],
        }
        return Response(self.status, body, {**self.headers, "Content-Type": "application/json"})


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
}


@dataclass
class KeyVersion:
    """One version of a key's material."""

    id: str
    material: bytes
    created: str = field(default_factory=now_iso)


@dataclass
class Key:
    """A root key (non-extractable, wraps DEKs) or a standard key (extractable)."""

    id: str
    name: str
    description: str
    extractable: bool
    imported: bool
    created_by: str
    crn: str
    versions: list[KeyVersion]
    created: str = field(default_factory=now_iso)
    last_rotated: str | None = None
    rotated_at: float | None = None  # emulator clock, epoch seconds
    state: int = ACTIVE
    last_updated: str | None = None
    rotation_policy: dict[str, Any] | None = None  # the policy resource as served

    @property
    def latest(self) -> KeyVersion:
        """The version new wraps use."""
        return self.versions[-1]

    def to_json(self, with_payload: bool = False) -> dict[str, Any]:
        """The key as Key Protect returns it (the payload only for standard keys' get)."""
        data: dict[str, Any] = {
            "type": KEY_TYPE,
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "state": self.state,
            "crn": self.crn,
            "extractable": self.extractable,
            "imported": self.imported,
            "deleted": False,
            "algorithmType": "AES",
            "algorithmMetadata": {"bitLength": str(len(self.latest.material) * 8), "mode": "GCM"},
            "createdBy": self.created_by,
            "creationDate": self.created,
            "lastUpdateDate": self.last_updated or self.last_rotated or self.created,
            "keyVersion": {"id": self.latest.id, "creationDate": self.latest.created},
            "dualAuthDelete": {"enabled": False},
        }
        if self.last_rotated:
            data["lastRotateDate"] = self.last_rotated
        if with_payload and self.extractable:
            data["payload"] = base64.b64encode(self.latest.material).decode()
        return data


@dataclass
class Instance:
    """A Key Protect service instance."""

    guid: str
    account_id: str
    region: str
    keys: dict[str, Key] = field(default_factory=dict)

    @property
    def crn(self) -> str:
        """The instance CRN."""
        return f"crn:v1:bluemix:public:kms:{self.region}:a/{self.account_id}:{self.guid}::"

    def key(self, key_id: str) -> Key:
        """A key by id (or name, as KP aliases resolve); 404 otherwise."""
        key = self.keys.get(key_id) or next(
            (k for k in self.keys.values() if k.name == key_id), None
        )
        if key is None:
            raise KeyProtectError(
                404, "KEY_NOT_FOUND_ERR", f"Key {key_id!r} does not exist in instance {self.guid}."
            )
        return key


class KeyProtectModel:
    """Key Protect instances of the emulated account, with IAM access checks."""

    def __init__(self, iam: IamModel, region: str, instance_guid: str) -> None:
        self.iam = iam
        self.clock = Clock()  # the emulator's clock, when the state shares it
        self.lock = threading.RLock()
        self.instances: dict[str, Instance] = {}
        self.registrations: dict[str, dict[str, Any]] = {}  # by resource CRN
        self.add_instance(instance_guid, region)

    def add_instance(self, guid: str, region: str) -> Instance:
        """A new (empty) instance in the account."""
        instance = Instance(guid, self.iam.account_id, region)
        with self.lock:
            self.instances[guid] = instance
        return instance

    def instance(self, guid: str | None, region: str | None = None) -> Instance:
        """The instance named by the bluemix-instance header (in `region`, when given: a
        regional endpoint knows only its region's instances)."""
        try:
            uuid.UUID(guid or "")
        except ValueError:
            raise KeyProtectError(
                400,
                "BAD_INSTANCE_ID_ERR",
                f"Bluemix-Instance header {guid!r} must be the UUID of a Key Protect instance.",
            ) from None
        with self.lock:
            instance = self.instances.get(str(guid))
        if instance is None or region not in (None, instance.region):
            raise KeyProtectError(
                401,
                "UNAUTHORIZED_ERR",
                f"The user does not have access to the specified resource: no instance {guid}.",
            )
        return instance

    def authorize(self, caller: Caller, instance: Instance, write: bool, key_id: str = "") -> None:
        """403 unless an access policy on kms (account, instance or key) grants the role."""
        attrs = {"serviceInstance": instance.guid, "region": instance.region}
        if key_id:
            attrs.update(resourceType="key", resource=key_id)
        resource = target("kms", instance.account_id, **attrs)
        if not self.iam.has_access(caller.iam_id, resource, WRITE_ROLES if write else READ_ROLES):
            role = "Writer" if write else "Reader"
            raise KeyProtectError(
                403,
                "FORBIDDEN_ERR",
                f"{caller.iam_id} has no access policy "
                f"granting {role} on Key Protect instance {instance.guid}.",
            )

    # -- keys -------------------------------------------------------------------------------
    def create_key(self, instance: Instance, body: dict[str, Any], caller: Caller) -> Key:
        """Create or import (with `payload`) one key from a key collection."""
        spec = _one_resource(body)
        name = spec.get("name")
        if not isinstance(name, str) or not name or len(name) > 90:
            raise _bad("name", name, "a non-empty string of at most 90 characters")
        extractable = spec.get("extractable", False)
        if not isinstance(extractable, bool):
            raise _bad("extractable", extractable, "true or false")
        payload = spec.get("payload")
        if payload is None:
            material = os.urandom(32)
        else:
            material = _b64(payload, "payload")
            if not extractable and len(material) not in ROOT_KEY_SIZES:
                raise _bad(
                    "payload",
                    f"<{len(material)} bytes>",
                    "a root key is 16, 24 or 32 bytes (128, 192 or 256 bits), base64-encoded",
                )
        key_id = str(uuid.uuid4())
        key = Key(
            key_id,
            name,
            str(spec.get("description") or ""),
            extractable,
            payload is not None,
            caller.iam_id,
            f"{instance.crn.removesuffix('::')}:key:{key_id}",
            [KeyVersion(str(uuid.uuid4()), material)],
        )
        with self.lock:
            instance.keys[key_id] = key
        return key

    def set_enabled(self, key: Key, enabled: bool) -> None:
        """`actions/enable` and `actions/disable` of a root key; 422 KEY_INVALID_STATE_ERR
        unless the key is in the state the action leaves."""
        _root(key, "enable" if enabled else "disable")
        wanted = SUSPENDED if enabled else ACTIVE
        if key.state != wanted:
            raise KeyProtectError(
                422,
                "KEY_INVALID_STATE_ERR",
                f"Key is not in a valid state: key {key.id} is "
                f"{'active' if key.state == ACTIVE else 'suspended'}.",
            )
        with self.lock:
            key.state = ACTIVE if enabled else SUSPENDED
            key.last_updated = now_iso()

    def set_policies(self, key: Key, body: dict[str, Any], caller: Caller) -> None:
        """PUT /keys/{id}/policies: a root key's rotation policy (other policy kinds are not
        emulated and refused)."""
        resources = body.get("resources") if isinstance(body, dict) else None
        if not isinstance(resources, list) or not resources:
            raise _bad("resources", resources, "a list of policy objects")
        for spec in resources:
            rotation = spec.get("rotation") if isinstance(spec, dict) else None
            if not isinstance(rotation, dict):
                raise _bad("resources[].rotation", rotation, "a rotation policy object")
            months = rotation.get("interval_month")
            enabled = rotation.get("enabled", True)
            if not isinstance(months, int) or isinstance(months, bool) or not 1 <= months <= 12:
                raise _bad("rotation.interval_month", months, "a whole number of months, 1 to 12")
            if not isinstance(enabled, bool):
                raise _bad("rotation.enabled", enabled, "true or false")
        if key.extractable:
            raise KeyProtectError(
                422,
                "KEY_ACTION_INVALID_VALUE_ERR",
                f"Key {key.id} is a standard key: rotation policies are for root keys.",
            )
        now = now_iso()
        created = (key.rotation_policy or {}).get("creationDate", now)
        key.rotation_policy = {
            "type": POLICY_TYPE,
            "crn": key.crn,
            "createdBy": (key.rotation_policy or {}).get("createdBy", caller.iam_id),
            "creationDate": created,
            "updatedBy": caller.iam_id,
            "lastUpdateDate": now,
            "rotation": {"enabled": enabled, "interval_month": months},
        }

    def rotate(self, key: Key, body: dict[str, Any]) -> None:
        """A new version of a root key (imported keys bring the new `payload`)."""
        _active(key)
        if key.extractable:
            raise KeyProtectError(
                422,
                "KEY_ACTION_INVALID_VALUE_ERR",
                f"Key {key.id} is a standard key: only root keys can be rotated.",
            )
        if key.imported:
            if "payload" not in body:
                raise _bad("payload", None, "required to rotate an imported root key")
            material = _b64(body["payload"], "payload")
            if len(material) not in ROOT_KEY_SIZES:
                raise _bad("payload", f"<{len(material)} bytes>", "16, 24 or 32 bytes")
        else:
            material = os.urandom(len(key.latest.material))
        with self.lock:
            now = self.clock.now()
            if key.rotated_at is not None and now - key.rotated_at < ROTATION_INTERVAL:
                raise KeyProtectError(
                    409,
                    "KEY_ROTATION_NOT_PERMITTED",
                    "This root key has been rotated within the last hour. Only one 'rotate' "
                    "action per hour is permitted",
                )
            key.versions.append(KeyVersion(str(uuid.uuid4()), material))
            key.rotated_at = now
            key.last_rotated = _iso(now)
            for registration in self.registrations.values():
                if registration["keyId"] == key.id:  # the registered service re-wraps (VPC)
                    registration["keyVersion"] = {
                        "id": key.latest.id,
                        "creationDate": key.latest.created,
                    }
                    registration["lastUpdated"] = key.last_rotated

    # -- registrations ------------------------------------------------------------------------
    def register(self, crk_crn: str, resource_crn: str) -> None:
        """Register a resource protected by a root key (as VPC does for its images,
        https://cloud.ibm.com/docs/key-protect?topic=key-protect-view-protected-data)."""
        parts = crk_crn.split(":")
        with self.lock:
            key = self.instances[parts[7]].keys[parts[9]]
            now = now_iso()
            self.registrations[resource_crn] = {
                "keyId": key.id,
                "resourceCrn": resource_crn,
                "createdBy": "is",
                "creationDate": now,
                "updatedBy": "is",
                "lastUpdated": now,
                "description": "",
                "preventKeyDeletion": False,
                "keyVersion": {"id": key.latest.id, "creationDate": key.latest.created},
            }

    def unregister(self, resource_crn: str) -> None:
        """Drop a deleted resource's registration."""
        with self.lock:
            self.registrations.pop(resource_crn, None)

    def registrations_of(self, key: Key) -> list[dict[str, Any]]:
        """The registrations of one key."""
        with self.lock:
            return [dict(r) for r in self.registrations.values() if r["keyId"] == key.id]

    # -- envelope encryption --------------------------------------------------------------------
    def wrap(self, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        """Wrap `plaintext` (or a fresh 32-byte DEK, returned too) with the latest version."""
        _root(key, "wrap")
        _active(key)
        generated = "plaintext" not in body
        dek = os.urandom(DEK_SIZE) if generated else _b64(body["plaintext"], "plaintext")
        if not 1 <= len(dek) <= MAX_PLAINTEXT:
            raise _bad("plaintext", f"<{len(dek)} bytes>", f"1 to {MAX_PLAINTEXT} bytes")
        answer: dict[str, Any] = {
            "ciphertext": _seal(key, key.latest, dek, _aad(body)),
            "keyVersion": {"id": key.latest.id},
        }
        if generated:
            answer["plaintext"] = base64.b64encode(dek).decode()
        return answer

    def unwrap(self, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        """The DEK, and a fresh ciphertext when the key was rotated since the wrap."""
        _root(key, "unwrap")
        _active(key)
        version, dek = _open(key, body.get("ciphertext"), _aad(body))
        answer: dict[str, Any] = {
            "plaintext": base64.b64encode(dek).decode(),
            "keyVersion": {"id": version.id},
        }
        if version is not key.latest:
            answer["ciphertext"] = _seal(key, key.latest, dek, _aad(body))
            answer["rewrappedKeyVersion"] = {"id": key.latest.id}
        return answer

    def rewrap(self, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        """The ciphertext wrapped again with the latest version."""
        _root(key, "rewrap")
        _active(key)
        version, dek = _open(key, body.get("ciphertext"), _aad(body))
        return {
            "ciphertext": _seal(key, key.latest, dek, _aad(body)),
            "keyVersion": {"id": version.id},
            "rewrappedKeyVersion": {"id": key.latest.id},
        }

    def unwrap_for_service(self, crk_crn: str, ciphertext: str, source_service: str) -> bytes:
        """What a service (e.g. server-protect) gets when it unwraps with a root key CRN: needs
        the `source_service -> kms` Reader authorization. Raises ValueError saying why not."""
        parts = crk_crn.split(":")
        if (
            len(parts) != 10
            or parts[:5] != ["crn", "v1", "bluemix", "public", "kms"]
            or (parts[8] != "key")
        ):
            raise ValueError(
                f"crkCrn {crk_crn!r} is not a Key Protect key CRN "
                "(crn:v1:bluemix:public:kms:<region>:a/<account>:<instance>:key:<id>)"
            )
        with self.lock:
            instance = self.instances.get(parts[7])
        if instance is None or parts[9] not in instance.keys:
            raise ValueError(f"crkCrn {crk_crn!r}: no such key in Key Protect")
        resource = target(
            "kms",
            instance.account_id,
            serviceInstance=instance.guid,
            region=instance.region,
            resourceType="key",
            resource=parts[9],
        )
        if not self.iam.authorized(source_service, resource, READ_ROLES):
            raise ValueError(
                f"{source_service} is not authorized to use Key Protect instance "
                f"{instance.guid}: create the IAM authorization policy source "
                f"serviceName={source_service} -> target serviceName=kms "
                f"serviceInstance={instance.guid}, role Reader"
            )
        try:
            return base64.b64decode(
                self.unwrap(instance.keys[parts[9]], {"ciphertext": ciphertext})["plaintext"]
            )
        except KeyProtectError as exc:
            raise ValueError(
                f"wrappedDek cannot be unwrapped with {crk_crn}: {exc.message}"
            ) from None


def _iso(epoch: float) -> str:
    """An epoch time as IBM APIs write it."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _one_resource(body: dict[str, Any]) -> dict[str, Any]:
    resources = body.get("resources") if isinstance(body, dict) else None
    if not isinstance(resources, list) or len(resources) != 1 or not isinstance(resources[0], dict):
        raise _bad("resources", resources, "a list of exactly one key object")
    spec = resources[0]
    if spec.get("type") not in (None, KEY_TYPE):
        raise _bad("resources[0].type", spec.get("type"), f"must be {KEY_TYPE!r}")
    return spec


def _bad(name: str, value: object, rule: str) -> KeyProtectError:
    return KeyProtectError(400, "BAD_BODY_ERR", f"{name} {value!r} is invalid: {rule}.")


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise _bad(name, value, "a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(name, "<not base64>", "must be base64-encoded") from None


def _aad(body: dict[str, Any]) -> bytes:
    aad = body.get("aad") or []
    if not isinstance(aad, list) or not all(isinstance(a, str) for a in aad):
        raise _bad("aad", aad, "a list of strings")
    return "\0".join(aad).encode()


def _root(key: Key, action: str) -> None:
    if key.extractable:
        raise KeyProtectError(
            422,
            "KEY_ACTION_INVALID_VALUE_ERR",
            f"Key {key.id} is a standard key: {action} needs a root key (extractable false).",
        )


def _active(key: Key) -> None:
    if key.state != ACTIVE:
        raise KeyProtectError(
            422,
            "KEY_INVALID_STATE_ERR",
            f"Key is not in a valid state: key {key.id} is disabled (suspended).",
        )


def _seal(key: Key, version: KeyVersion, dek: bytes, aad: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(version.material).encrypt(nonce, dek, key.id.encode() + b"\0" + aad)
    blob = CIPHERTEXT_MAGIC + uuid.UUID(version.id).bytes + nonce + sealed
    return base64.b64encode(blob).decode()


def _open(key: Key, ciphertext: object, aad: bytes) -> tuple[KeyVersion, bytes]:
    blob = _b64(ciphertext, "ciphertext")
    if len(blob) < 48 or not blob.startswith(CIPHERTEXT_MAGIC):
        raise _bad("ciphertext", "<opaque>", "not a ciphertext Key Protect produced")
    version_id = str(uuid.UUID(bytes=blob[4:20]))
    version = next((v for v in key.versions if v.id == version_id), None)
    if version is None:
        raise KeyProtectError(
            422, "UNPROCESSABLE_ENTITY_ERR", f"The ciphertext was not wrapped by key {key.id}."
        )
    try:
        dek = AESGCM(version.material).decrypt(
            blob[20:32], blob[32:], key.id.encode() + b"\0" + aad
        )
    except InvalidTag:
        raise KeyProtectError(
            422,
            "UNPROCESSABLE_ENTITY_ERR",
            "The ciphertext is invalid or its additional authenticated data (aad) does not match.",
        ) from None
    return version, dek
