"""Entra ID state: tenants, their principals, and the tokens they issue."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt

from emulator.faults import FaultInjector
from emulator.http import HttpError, Response
from emulator.services.entra.applications import FIRST_PARTY, ApplicationDirectory

# Audiences the management plane accepts (the SDKs ask for the public cloud's by default).
ARM_AUDIENCES = frozenset({"https://management.azure.com", "https://management.core.windows.net"})


@dataclass
class Principal:
    """A service principal or a managed identity's principal."""

    object_id: str
    client_id: str
    display_name: str
    kind: str  # "ServicePrincipal" or "ManagedIdentity"
    secret: str | None = None
    visible_at: float = 0.0  # monotonic time from which directory look-ups find it
    tenant_id: str = ""  # the directory (tenant) it belongs to

    @property
    def visible(self) -> bool:
        """Whether the directory has caught up with this principal yet."""
        return time.monotonic() >= self.visible_at


def _audience(scope: str) -> str:
    """'https://vault.azure.net/.default' -> 'https://vault.azure.net'."""
    resource = scope.split()[0] if scope else ""
    if resource.endswith("/.default"):
        resource = resource[: -len("/.default")]
    return resource.rstrip("/")


class EntraModel:
    """Tenants (directories) with their principals; issues and checks signed bearer tokens.
    `tenant_id` is the home tenant: principals added without a tenant belong to it."""

    token_lifetime = 3599

    def __init__(self, tenant_id: str, faults: FaultInjector) -> None:
        self.tenant_id = tenant_id.lower()
        self.faults = faults
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self.tenants: dict[str, str] = {self.tenant_id: "byok emulator"}  # id -> display name
        self.principals: dict[str, Principal] = {}
        self.apps = ApplicationDirectory()

    def add_tenant(self, tenant_id: str | None = None, display_name: str = "") -> str:
        """Add a directory; returns its id."""
        tenant = (tenant_id or str(uuid.uuid4())).lower()
        with self._lock:
            self.tenants[tenant] = display_name or f"byok emulator tenant {len(self.tenants)}"
        return tenant

    def _tenant(self, tenant_id: str | None) -> str:
        tenant = (tenant_id or self.tenant_id).lower()
        if tenant not in self.tenants:
            raise ValueError(f"tenant_id = {tenant_id}: not a tenant of the emulator")
        return tenant

    def _add(self, principal: Principal) -> Principal:
        with self._lock:
            self.principals[principal.object_id] = principal
        return principal

    def add_service_principal(
        self,
        display_name: str,
        client_id: str | None = None,
        secret: str | None = None,
        tenant_id: str | None = None,
    ) -> Principal:
        """Register an application's service principal with a client secret in a tenant
        (default: the home tenant)."""
        return self._add(
            Principal(
                object_id=str(uuid.uuid4()),
                client_id=client_id or str(uuid.uuid4()),
                display_name=display_name,
                kind="ServicePrincipal",
                secret=secret or secrets.token_urlsafe(30),
                tenant_id=self._tenant(tenant_id),
            )
        )

    def add_managed_identity(self, display_name: str, tenant_id: str | None = None) -> Principal:
        """A managed identity's principal; directory look-ups see it after the
        `principal-visible` delayed effect."""
        return self._add(
            Principal(
                object_id=str(uuid.uuid4()),
                client_id=str(uuid.uuid4()),
                display_name=display_name,
                kind="ManagedIdentity",
                visible_at=self.faults.effect_time("principal-visible"),
                tenant_id=self._tenant(tenant_id),
            )
        )

    def install_application(self, app_id: str, tenant_id: str) -> Principal:
        """The service principal of an app in a tenant (Graph POST /servicePrincipals):
        made once; an app of another tenant must be multi-tenant, a first-party app of
        Microsoft (FIRST_PARTY) installs anywhere."""
        app = self.apps.by_app_id(app_id)
        tenant = self._tenant(tenant_id)
        if app is None and app_id in FIRST_PARTY:
            name = FIRST_PARTY[app_id]
        elif app is None or (app.tenant_id != tenant and not app.multi_tenant):
            raise HttpError(
                400,
                "Request_BadRequest",
                f"appId = {app_id}: no application of tenant '{tenant}' and no multi-tenant "
                "application has this id; a single-tenant application cannot be installed in "
                "another tenant.",
            )
        else:
            name = app.display_name
        installed = self.by_client_id(app_id, tenant)
        if installed is not None:
            return installed
        return self._add(
            Principal(
                object_id=str(uuid.uuid4()),
                client_id=app_id,
                display_name=name,
                kind="ServicePrincipal",
                tenant_id=tenant,
            )
        )

    def remove(self, object_id: str) -> None:
        """Delete a principal (its identity was deleted)."""
        with self._lock:
            self.principals.pop(object_id, None)

    def directory(self, tenant_id: str) -> list[Principal]:
        """The principals of one tenant."""
        with self._lock:
            return [p for p in self.principals.values() if p.tenant_id == tenant_id.lower()]

    def by_client_id(self, client_id: str, tenant_id: str | None = None) -> Principal | None:
        """The principal with this application (client) id (in `tenant_id`, if given)."""
        with self._lock:
            return next(
                (
                    p
                    for p in self.principals.values()
                    if p.client_id == client_id and tenant_id in (None, p.tenant_id)
                ),
                None,
            )

    def issue_token(self, tenant: str, form: dict[str, str]) -> dict[str, object]:
        """The client-credentials grant: check the secret and sign a token for the scope,
        issued by the tenant the principal belongs to."""
        tenant = tenant.lower()
        if tenant not in self.tenants and tenant != "organizations":
            raise OAuthError(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            raise OAuthError(
                400,
                "unsupported_grant_type",
                f"AADSTS70003: grant type {form.get('grant_type')!r} is not supported here.",
            )
        client_id = form.get("client_id", "")
        principal = self.by_client_id(client_id, None if tenant == "organizations" else tenant)
        if principal is None or principal.secret is None:
            raise OAuthError(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found "
                f"in the directory '{tenant}'.",
            )
        if not hmac.compare_digest(form.get("client_secret", ""), principal.secret):
            raise OAuthError(
                401,
                "invalid_client",
                f"AADSTS7000215: Invalid client secret provided for app '{client_id}'.",
            )
        now = int(time.time())
        claims = {
            "aud": _audience(form.get("scope", "")),
            "iss": f"https://sts.emulator/{principal.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "oid": principal.object_id,
            "appid": principal.client_id,
            "tid": principal.tenant_id,
            "sub": principal.object_id,
        }
        return {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": jwt.encode(claims, self._key, algorithm="HS256"),
        }

    def authenticate(self, authorization: str | None, audiences: frozenset[str]) -> Principal:
        """The principal behind a bearer token valid for one of `audiences`; 401 otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HttpError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' "
                "header is missing or not a bearer token.",
            )
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError as exc:
            raise HttpError(401, "ExpiredAuthenticationToken", "The access token expired.") from exc
        except jwt.InvalidTokenError as exc:
            raise HttpError(
                401, "InvalidAuthenticationToken", "The access token is invalid."
            ) from exc
        if str(claims.get("aud", "")).rstrip("/") not in audiences:
            raise HttpError(
                401,
                "InvalidAuthenticationTokenAudience",
                f"The access token has an invalid audience {claims.get('aud')!r}.",
            )
        with self._lock:
            principal = self.principals.get(str(claims.get("oid")))
        if principal is None or claims.get("tid") != principal.tenant_id:
            raise HttpError(401, "InvalidAuthenticationToken", "The token's principal is gone.")
        return principal


class OAuthError(HttpError):
    """An OAuth 2.0 error answer: {"error", "error_description"}."""

    def response(self) -> Response:
        body = {"error": self.code, "error_description": self.message, "error_codes": []}
        return Response(self.status, body)
