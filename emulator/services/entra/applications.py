"""Entra app registrations: their sign-in audience, the federated identity credentials that
let a workload (a user-assigned identity) act as the app, and the service principals that
install an app in a tenant. What cross-tenant customer-managed keys rest on
(https://learn.microsoft.com/azure/virtual-machines/disks-cross-tenant-customer-managed-keys):
a multi-tenant app of the service provider's tenant, the provider's identity federated to it
(issuer `https://login.microsoftonline.com/<tenant>/v2.0`, subject the identity's principal
id, audience `api://AzureADTokenExchange`), and the app installed in the customer's tenant.
Shapes: https://learn.microsoft.com/graph/api/resources/application and
https://learn.microsoft.com/graph/api/resources/federatedidentitycredential."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from emulator.http import HttpError

MULTI_TENANT = ("AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount")
AUDIENCES = ("AzureADMyOrg", *MULTI_TENANT, "PersonalMicrosoftAccount")
TOKEN_EXCHANGE = "api://AzureADTokenExchange"
# Microsoft's first-party apps a tenant may install by app id: the Confidential VM Orchestrator
# (`az ad sp create --id bf7b6499-ff71-4aa2-97a4-f372087be7f0`,
# https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-azure-cli).
CONFIDENTIAL_VM_ORCHESTRATOR = "bf7b6499-ff71-4aa2-97a4-f372087be7f0"
FIRST_PARTY = {CONFIDENTIAL_VM_ORCHESTRATOR: "Confidential VM Orchestrator"}


@dataclass
class Application:
    """An app registration of one tenant."""

    object_id: str
    app_id: str
    display_name: str
    tenant_id: str
    sign_in_audience: str = "AzureADMyOrg"
    federated_credentials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def multi_tenant(self) -> bool:
        """Whether other tenants may install it."""
        return self.sign_in_audience in MULTI_TENANT

    def to_json(self) -> dict[str, Any]:
        """As Graph serves it."""
        return {
            "id": self.object_id,
            "appId": self.app_id,
            "displayName": self.display_name,
            "signInAudience": self.sign_in_audience,
            "publisherDomain": f"{self.tenant_id}.emulator",
        }

    def federated_by(self, issuer_tenant: str, subject: str) -> bool:
        """Whether a credential lets a token of `issuer_tenant` for `subject` (a managed
        identity's principal id) act as this app."""
        return any(
            str(fic.get("issuer", "")).rstrip("/").lower().endswith(f"/{issuer_tenant}/v2.0")
            and fic.get("subject") == subject
            and TOKEN_EXCHANGE in (fic.get("audiences") or [])
            for fic in self.federated_credentials
        )


def _checked_audience(value: Any) -> str:
    if value not in AUDIENCES:
        raise HttpError(
            400,
            "Request_BadRequest",
            f"signInAudience = {value}: one of {', '.join(AUDIENCES)}.",
        )
    return str(value)


class ApplicationDirectory:
    """Every tenant's app registrations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.applications: dict[str, Application] = {}  # by object id

    def add(self, tenant_id: str, body: dict[str, Any]) -> Application:
        """Register an app in a tenant (Graph POST /applications)."""
        if not body.get("displayName"):
            raise HttpError(400, "Request_BadRequest", "displayName is required.")
        app = Application(
            str(uuid.uuid4()),
            str(uuid.uuid4()),
            str(body["displayName"]),
            tenant_id.lower(),
            _checked_audience(body.get("signInAudience", "AzureADMyOrg")),
        )
        with self._lock:
            self.applications[app.object_id] = app
        return app

    def of_tenant(self, tenant_id: str) -> list[Application]:
        """A tenant's app registrations."""
        with self._lock:
            return [a for a in self.applications.values() if a.tenant_id == tenant_id.lower()]

    def by_app_id(self, app_id: str) -> Application | None:
        """The app registration with this application (client) id, in any tenant."""
        with self._lock:
            return next((a for a in self.applications.values() if a.app_id == app_id), None)

    def get(self, tenant_id: str, key: str) -> Application:
        """A tenant's app by object id or app id, or Graph's 404."""
        for app in self.of_tenant(tenant_id):
            if key.lower() in (app.object_id, app.app_id):
                return app
        raise HttpError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )

    def update(self, app: Application, body: dict[str, Any]) -> None:
        """Graph PATCH /applications/{id}: display name and sign-in audience."""
        if "signInAudience" in body:
            app.sign_in_audience = _checked_audience(body["signInAudience"])
        if body.get("displayName"):
            app.display_name = str(body["displayName"])

    def add_federated_credential(self, app: Application, body: dict[str, Any]) -> dict[str, Any]:
        """Graph POST /applications/{id}/federatedIdentityCredentials (names unique per app)."""
        for name in ("name", "issuer", "subject"):
            if not body.get(name):
                raise HttpError(400, "Request_BadRequest", f"{name} is required.")
        audiences = body.get("audiences") or []
        if not isinstance(audiences, list) or len(audiences) != 1:
            raise HttpError(
                400,
                "Request_BadRequest",
                f"audiences = {audiences}: exactly one audience (e.g. {TOKEN_EXCHANGE}).",
            )
        if any(f["name"].lower() == str(body["name"]).lower() for f in app.federated_credentials):
            raise HttpError(
                409,
                "Request_MultipleObjectsWithSameKeyValue",
                f"A federated identity credential named '{body['name']}' already exists.",
            )
        fic = {
            "id": str(uuid.uuid4()),
            "name": str(body["name"]),
            "issuer": str(body["issuer"]),
            "subject": str(body["subject"]),
            "audiences": list(audiences),
            "description": body.get("description"),
        }
        app.federated_credentials.append(fic)
        return fic

    def remove_federated_credential(self, app: Application, key: str) -> None:
        """Graph DELETE /applications/{id}/federatedIdentityCredentials/{id or name}
        (https://learn.microsoft.com/graph/api/federatedidentitycredential-delete: 204, or 404
        for an unknown credential)."""
        kept = [
            f
            for f in app.federated_credentials
            if key.lower() not in (f["id"].lower(), f["name"].lower())
        ]
        if len(kept) == len(app.federated_credentials):
            raise HttpError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        app.federated_credentials[:] = kept
