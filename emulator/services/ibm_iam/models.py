"""IBM Cloud IAM state of one account (emulator.ibm_accounts holds every account's): the API
keys of its user and service IDs, the tokens IAM issues for them, and access and
authorization policies."""

from __future__ import annotations

import fnmatch
import functools
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.faults import FaultInjector
from emulator.http import HttpError, Response

ROLE_CRN = "crn:v1:bluemix:public:iam::::"
PLATFORM_SERVICES = frozenset({"iam-identity", "iam-access-management", "iam-groups"})
READ_ROLES = frozenset({"Reader", "ReaderPlus", "Writer", "Manager"})
WRITE_ROLES = frozenset({"Writer", "Manager"})
APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"


@dataclass(frozen=True)
class IbmIdentity:
    """The fixed identifiers and secrets of the emulated IBM Cloud account."""

    account_id: str = "b10cb10c00004000800000000000b10c"
    user_iam_id: str = "IBMid-2700B10C00"
    user_name: str = "byok-user@emulator.example"
    api_key: str = "emulator-ibm-api-key-00000000000000000000b10c"
    region: str = "us-south"
    key_protect_instance: str = "9d3f6c1e-0000-4000-8000-00000000b10c"
    cos_instance: str = "5c0e1a2b-0000-4000-8000-00000000b10c"
    cos_hmac_access_key_id: str = "emulatorhmacaccesskeyid0000b10c"
    cos_hmac_secret_access_key: str = "emulator-cos-hmac-secret-access-key-000000b10c"


def now_iso() -> str:
    """The current time as IBM APIs write it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def target(service: str, account_id: str, **attributes: str) -> dict[str, str]:
    """The attributes of a resource a policy may cover (serviceType filled in)."""
    kind = "platform_service" if service in PLATFORM_SERVICES else "service"
    return {"accountId": account_id, "serviceName": service, "serviceType": kind, **attributes}


@functools.cache
def _signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class IamApiError(HttpError):
    """An error of the IAM policy and identity APIs: {"trace", "errors", "status_code"}."""

    def response(self) -> Response:
        body = {
            "trace": uuid.uuid4().hex,
            "errors": [{"code": self.code, "message": self.message}],
            "status_code": self.status,
        }
        return Response(self.status, body, dict(self.headers))


class IamTokenError(HttpError):
    """An error of the token endpoint: {"errorCode", "errorMessage", "context"}."""

    def response(self) -> Response:
        body = {
            "errorCode": self.code,
            "errorMessage": self.message,
            "context": {"requestId": uuid.uuid4().hex, "requestType": "incoming.OIDC_Token"},
        }
        return Response(self.status, body)


class AuthenticationError(Exception):
    """A bearer token is missing, malformed, expired or not ours (each service answers it in
    its own error shape)."""


@dataclass(frozen=True)
class Caller:
    """Who a valid token belongs to."""

    iam_id: str
    account_id: str
    sub_type: str  # "user" or "ServiceId"


@dataclass
class ApiKey:
    """A user or service ID API key; `value` is only ever returned at creation."""

    id: str
    name: str
    iam_id: str
    account_id: str
    value: str
    description: str = ""
    created_at: str = field(default_factory=now_iso)

    def to_json(self, with_value: bool = False) -> dict[str, Any]:
        """The key as IAM Identity returns it."""
        data: dict[str, Any] = {
            "id": self.id,
            "entity_tag": "1-" + self.id[-8:],
            "crn": f"crn:v1:bluemix:public:iam-identity::a/{self.account_id}::apikey:{self.id}",
            "locked": False,
            "disabled": False,
            "created_at": self.created_at,
            "modified_at": self.created_at,
            "name": self.name,
            "description": self.description,
            "iam_id": self.iam_id,
            "account_id": self.account_id,
        }
        if with_value:
            data["apikey"] = self.value
        return data


@dataclass
class ServiceId:
    """A service ID (an identity for applications)."""

    id: str
    name: str
    account_id: str
    description: str = ""
    created_at: str = field(default_factory=now_iso)

    @property
    def iam_id(self) -> str:
        """The IAM id policies name it by."""
        return "iam-" + self.id

    def to_json(self) -> dict[str, Any]:
        """The service ID as IAM Identity returns it."""
        return {
            "id": self.id,
            "iam_id": self.iam_id,
            "entity_tag": "1-" + self.id[-8:],
            "crn": f"crn:v1:bluemix:public:iam-identity::a/{self.account_id}::serviceid:{self.id}",
            "locked": False,
            "created_at": self.created_at,
            "modified_at": self.created_at,
            "account_id": self.account_id,
            "name": self.name,
            "description": self.description,
        }


@dataclass
class Policy:
    """An access or authorization policy, stored as the API sends it."""

    id: str
    type: str
    subjects: list[dict[str, Any]]
    roles: list[dict[str, Any]]
    resources: list[dict[str, Any]]
    description: str
    created_by_id: str
    effective_at: float = 0.0  # monotonic time from which it grants (delayed effect)
    created_at: str = field(default_factory=now_iso)

    @property
    def subject(self) -> dict[str, str]:
        """The subject's attributes by name."""
        return _attributes(self.subjects)

    @property
    def resource(self) -> dict[str, str]:
        """The resource's attributes by name."""
        return _attributes(self.resources)

    @property
    def role_names(self) -> set[str]:
        """'crn:…:serviceRole:Reader' -> 'Reader'."""
        return {str(r.get("role_id", "")).rsplit(":", 1)[-1] for r in self.roles}

    def covers(self, resource: dict[str, str], roles: Iterable[str]) -> bool:
        """Whether this policy grants one of `roles` on a resource with these attributes."""
        if time.monotonic() < self.effective_at or not self.role_names & set(roles):
            return False
        return all(_matches(v, resource.get(k)) for k, v in self.resource.items())

    def to_json(self, base_url: str) -> dict[str, Any]:
        """The policy as IAM Policy Management returns it."""
        return {
            "id": self.id,
            "type": self.type,
            "description": self.description,
            "subjects": self.subjects,
            "roles": [
                {
                    "role_id": r["role_id"],
                    "display_name": str(r["role_id"]).rsplit(":", 1)[-1],
                    "description": "",
                }
                for r in self.roles
            ],
            "resources": self.resources,
            "href": f"{base_url}/v1/policies/{self.id}",
            "created_at": self.created_at,
            "created_by_id": self.created_by_id,
            "last_modified_at": self.created_at,
            "last_modified_by_id": self.created_by_id,
            "state": "active",
        }


def _attributes(items: list[dict[str, Any]]) -> dict[str, str]:
    first = items[0] if items else {}
    return {str(a.get("name")): str(a.get("value")) for a in first.get("attributes") or []}


def _matches(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    return fnmatch.fnmatchcase(value, pattern) if "*" in pattern else pattern == value


def authenticate(authorization: str | None) -> Caller:
    """The caller behind `Authorization: Bearer <IAM token>` (any account's: the emulator's
    IAM signs every account's tokens with one key)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("the Authorization header is missing or not a bearer token")
    try:
        claims = jwt.decode(token, _signing_key().public_key(), algorithms=["RS256"])
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationError("the IAM token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthenticationError(f"the IAM token is invalid: {exc}") from exc
    return Caller(claims["iam_id"], claims["account"]["bss"], claims["sub_type"])


class IamModel:
    """One account's identities, keys and policies; issues and checks signed tokens."""

    token_lifetime = 3600

    def __init__(self, identity: IbmIdentity, faults: FaultInjector) -> None:
        self.identity = identity
        self.account_id = identity.account_id
        self.faults = faults
        self.lock = threading.RLock()
        self.api_keys: dict[str, ApiKey] = {}
        self.service_ids: dict[str, ServiceId] = {}
        self.policies: dict[str, Policy] = {}
        self.user_key = self._add_key("byok-emulator-user", identity.user_iam_id, identity.api_key)
        user = [{"attributes": [{"name": "iam_id", "value": identity.user_iam_id}]}]
        for kind, roles in (
            ("service", ["role:Administrator", "serviceRole:Manager"]),
            ("platform_service", ["role:Administrator"]),
        ):
            self._add_policy(
                "access",
                user,
                [{"role_id": ROLE_CRN + role} for role in roles],
                [_resource(accountId=self.account_id, serviceType=kind)],
                "Seeded: the emulator's user administers the account.",
                identity.user_iam_id,
            )

    # -- tokens --------------------------------------------------------------------------

    def bucket(self, bucket: str) -> dict[str, str]:
        """The policy target of one bucket of the account's COS instance."""
        return target(
            "cloud-object-storage",
            self.account_id,
            serviceInstance=self.identity.cos_instance,
            resourceType="bucket",
            resource=bucket,
        )

    def issue_token(self, form: dict[str, str]) -> dict[str, Any]:
        """The API key grant: check the key and sign a token for its owner."""
        grant = form.get("grant_type", "")
        if grant != APIKEY_GRANT:
            raise IamTokenError(
                400,
                "BXNIM0307E",
                f"grant_type {grant!r} is not supported; expected {APIKEY_GRANT!r}.",
            )
        value = form.get("apikey", "")
        if not value:
            raise IamTokenError(
                400,
                "BXNIM0415E",
                "Provided API key could not be found: the form field 'apikey' is empty.",
            )
        key = self.key_by_value(value)
        if key is None:
            raise IamTokenError(400, "BXNIM0415E", "Provided API key could not be found.")
        now = int(time.time())
        is_user = key.iam_id == self.identity.user_iam_id
        claims: dict[str, Any] = {
            "iam_id": key.iam_id,
            "id": key.iam_id,
            "realmid": "IBMid" if is_user else "iam",
            "sub": self.identity.user_name if is_user else key.iam_id.removeprefix("iam-"),
            "sub_type": "user" if is_user else "ServiceId",
            "account": {"bss": self.account_id, "valid": True},
            "iat": now,
            "exp": now + self.token_lifetime,
            "iss": "https://iam.emulator/identity",
            "grant_type": APIKEY_GRANT,
            "scope": "ibm openid",
            "client_id": "default",
            "jti": uuid.uuid4().hex,
        }
        return {
            "access_token": jwt.encode(claims, _signing_key(), algorithm="RS256"),
            "refresh_token": secrets.token_urlsafe(48),
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "expiration": now + self.token_lifetime,
            "scope": "ibm openid",
        }

    # -- API keys and service IDs ----------------------------------------------------------
    def _add_key(self, name: str, iam_id: str, value: str, description: str = "") -> ApiKey:
        key = ApiKey(
            "ApiKey-" + str(uuid.uuid4()), name, iam_id, self.account_id, value, description
        )
        with self.lock:
            self.api_keys[key.id] = key
        return key

    def key_by_value(self, value: str) -> ApiKey | None:
        """The API key with this secret value."""
        with self.lock:
            keys = list(self.api_keys.values())
        return next((k for k in keys if hmac.compare_digest(k.value, value)), None)

    def create_api_key(self, body: dict[str, Any]) -> ApiKey:
        """A new API key for the user or a service ID of the account."""
        name, iam_id = _required(body, "name"), _required(body, "iam_id")
        self._check_account(body.get("account_id") or self.account_id)
        known = {self.identity.user_iam_id} | {s.iam_id for s in self.service_ids.values()}
        if iam_id not in known:
            raise IamApiError(
                404,
                "not_found",
                f"iam_id {iam_id!r} is neither the user nor a service ID "
                f"of account {self.account_id}.",
            )
        value = body.get("apikey") or secrets.token_urlsafe(33)
        return self._add_key(name, iam_id, value, body.get("description") or "")

    def create_service_id(self, body: dict[str, Any]) -> ServiceId:
        """A new service ID."""
        name = _required(body, "name")
        self._check_account(_required(body, "account_id"))
        service_id = ServiceId(
            "ServiceId-" + str(uuid.uuid4()), name, self.account_id, body.get("description") or ""
        )
        with self.lock:
            self.service_ids[service_id.id] = service_id
        return service_id

    def get(self, kind: str, item_id: str) -> Any:
        """A stored API key, service ID or policy by id; 404 naming it otherwise."""
        stores: dict[str, dict[str, Any]] = {
            "apikey": self.api_keys,
            "serviceid": self.service_ids,
            "policy": self.policies,
        }
        store = stores[kind]
        with self.lock:
            item = store.get(item_id)
        if item is None:
            raise IamApiError(404, f"{kind}_not_found", f"No {kind} with id {item_id!r}.")
        return item

    def delete_service_id(self, service_id: str) -> None:
        """Delete a service ID with its API keys."""
        item: ServiceId = self.get("serviceid", service_id)
        with self.lock:
            del self.service_ids[service_id]
            for key in [k for k in self.api_keys.values() if k.iam_id == item.iam_id]:
                del self.api_keys[key.id]

    def delete_api_key(self, key_id: str) -> None:
        """Delete an API key."""
        self.get("apikey", key_id)
        with self.lock:
            del self.api_keys[key_id]

    # -- policies ---------------------------------------------------------------------------
    def _add_policy(
        self,
        kind: str,
        subjects: list[dict[str, Any]],
        roles: list[dict[str, Any]],
        resources: list[dict[str, Any]],
        description: str,
        created_by: str,
        effective_at: float = 0.0,
    ) -> Policy:
        policy = Policy(
            str(uuid.uuid4()),
            kind,
            subjects,
            roles,
            resources,
            description,
            created_by,
            effective_at,
        )
        with self.lock:
            self.policies[policy.id] = policy
        return policy

    def create_policy(self, body: dict[str, Any], caller: Caller) -> Policy:
        """Validate and store a policy as ibm-platform-services sends it."""
        kind = _required(body, "type")
        if kind not in ("access", "authorization"):
            raise IamApiError(
                400, "invalid_body", f"type {kind!r} is not valid: use 'access' or 'authorization'."
            )
        subjects, roles, resources = (
            _attribute_list(body, "subjects"),
            body.get("roles"),
            _attribute_list(body, "resources"),
        )
        if (
            not isinstance(roles, list)
            or not roles
            or not all(
                isinstance(r, dict) and str(r.get("role_id", "")).startswith(ROLE_CRN)
                for r in roles
            )
        ):
            raise IamApiError(
                400,
                "invalid_body",
                f"roles {roles!r} must be a non-empty list of {{'role_id': '{ROLE_CRN}…'}}.",
            )
        subject, resource = _attributes(subjects), _attributes(resources)
        self._check_account(resource.get("accountId", ""), "resources accountId")
        needed = ("iam_id", "access_group_id") if kind == "access" else ("serviceName",)
        if not any(subject.get(n) for n in needed):
            raise IamApiError(
                400,
                "invalid_body",
                f"subjects {subject!r} of an {kind} policy need one of "
                f"the attributes {', '.join(needed)}.",
            )
        if kind == "authorization":
            self._check_account(subject.get("accountId", ""), "subjects accountId")
        if not any(resource.get(n) for n in ("serviceName", "serviceType", "resourceGroupId")):
            raise IamApiError(
                400,
                "invalid_body",
                f"resources {resource!r} need one of the "
                "attributes serviceName, serviceType, resourceGroupId.",
            )
        scope = target(resource.get("serviceName", ""), self.account_id, **resource)
        if not self.has_access(caller.iam_id, scope, {"Administrator"}):
            raise IamApiError(
                403,
                "insufficent_permissions",
                f"{caller.iam_id} may not grant "
                f"access to {resource!r}: it needs the Administrator role there.",
            )
        with self.lock:
            for other in self.policies.values():
                if (other.type, other.subject, other.resource, other.role_names) == (
                    kind,
                    subject,
                    resource,
                    {str(r["role_id"]).rsplit(":", 1)[-1] for r in roles},
                ):
                    raise IamApiError(
                        409,
                        "policy_conflict_error",
                        "Failed to create policy: a policy with "
                        f"the same subject, roles and resources already exists: {other.id}.",
                    )
            return self._add_policy(
                kind,
                subjects,
                roles,
                resources,
                body.get("description") or "",
                caller.iam_id,
                self.faults.effect_time("access-grant"),
            )

    def list_policies(self, query: dict[str, str]) -> list[Policy]:
        """Policies of the account, filtered by iam_id, type and service_type as IAM does."""
        self._check_account(_required(query, "account_id"), "account_id")
        with self.lock:
            found = list(self.policies.values())
        if query.get("iam_id"):
            found = [p for p in found if p.subject.get("iam_id") == query["iam_id"]]
        if query.get("type"):
            found = [p for p in found if p.type == query["type"]]
        if query.get("service_type"):
            found = [p for p in found if p.resource.get("serviceType") == query["service_type"]]
        return found

    def delete_policy(self, policy_id: str) -> None:
        """Delete a policy."""
        self.get("policy", policy_id)
        with self.lock:
            del self.policies[policy_id]

    def has_access(self, iam_id: str, resource: dict[str, str], roles: Iterable[str]) -> bool:
        """Whether an access policy grants `iam_id` one of `roles` on `resource`."""
        with self.lock:
            policies = list(self.policies.values())
        return any(
            p.type == "access" and p.subject.get("iam_id") == iam_id and p.covers(resource, roles)
            for p in policies
        )

    def authorized(
        self, source_service: str, resource: dict[str, str], roles: Iterable[str]
    ) -> bool:
        """Whether an authorization policy lets `source_service` act on `resource`."""
        with self.lock:
            policies = list(self.policies.values())
        return any(
            p.type == "authorization"
            and p.subject.get("serviceName") == source_service
            and p.subject.get("accountId") == resource.get("accountId")
            and p.covers(resource, roles)
            for p in policies
        )

    def _check_account(self, account_id: str, name: str = "account_id") -> None:
        if account_id != self.account_id:
            raise IamApiError(
                403 if account_id else 400,
                "invalid_account" if account_id else "missing_account",
                f"{name} {account_id!r} is not the emulated account {self.account_id!r}.",
            )


def _resource(**attributes: str) -> dict[str, Any]:
    return {
        "attributes": [
            {"name": k, "value": v, "operator": "stringEquals"} for k, v in attributes.items()
        ]
    }


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise IamApiError(400, "invalid_body", f"{name} {value!r} is required: a non-empty string.")
    return value


def _attribute_list(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = body.get(name)
    if (
        not isinstance(items, list)
        or len(items) != 1
        or not isinstance(items[0], dict)
        or not isinstance(items[0].get("attributes"), list)
        or not all(
            isinstance(a, dict) and a.get("name") and a.get("value") for a in items[0]["attributes"]
        )
    ):
        raise IamApiError(
            400,
            "invalid_body",
            f"{name} {items!r} must be one {{'attributes': [{{'name', 'value'}}…]}} entry.",
        )
    return items
