"""The part of Microsoft Graph (v1.0) that the Azure CLI asks about principals: service
principal lists with the `$filter`s it sends, one service principal (read or deleted),
`directoryObjects/getByIds`, and `/me` (which refuses application tokens, as Graph does). A
caller sees the principals of its own tenant that the directory has caught up with. App
registrations of the caller's tenant with their federated identity credentials (added, listed,
deleted), and service principals made for an app (a multi-tenant app of another tenant
installed in the caller's), as cross-tenant keys need them
(emulator/services/entra/applications.py).

Shapes: https://learn.microsoft.com/en-us/graph/api/serviceprincipal-list,
https://learn.microsoft.com/en-us/graph/api/directoryobject-getbyids,
https://learn.microsoft.com/en-us/graph/api/user-get (an app token on /me: 400 "/me request is
only valid with delegated authentication flow.", the text azure-cli's role/util.py expects)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from emulator.http import HttpError, Request, Response, Router
from emulator.services.entra.models import EntraModel, Principal

GRAPH_AUDIENCE = "https://graph.microsoft.com"
SP_TYPE = "#microsoft.graph.servicePrincipal"
# $filter expressions the CLI sends (azure-cli role/custom.py, role/util.py, _graph_client.py)
_FILTERS: list[tuple[re.Pattern[str], Callable[[dict[str, Any], str], bool]]] = [
    (
        re.compile(r"^servicePrincipalNames/any\(c:c eq '(?P<v>[^']*)'\)$", re.I),
        lambda sp, v: v.lower() in (n.lower() for n in sp["servicePrincipalNames"]),
    ),
    (re.compile(r"^appId eq '(?P<v>[^']*)'$", re.I), lambda sp, v: sp["appId"] == v),
    (re.compile(r"^displayName eq '(?P<v>[^']*)'$", re.I), lambda sp, v: sp["displayName"] == v),
    (
        re.compile(r"^startswith\(displayName,\s*'(?P<v>[^']*)'\)$", re.I),
        lambda sp, v: sp["displayName"].lower().startswith(v.lower()),
    ),
]


def service_principal(principal: Principal) -> dict[str, Any]:
    """A principal as Graph's servicePrincipal resource."""
    managed = principal.kind == "ManagedIdentity"
    return {
        "@odata.type": SP_TYPE,
        "id": principal.object_id,
        "appId": principal.client_id,
        "displayName": principal.display_name,
        "servicePrincipalNames": [principal.client_id],
        "servicePrincipalType": "ManagedIdentity" if managed else "Application",
        "appOwnerOrganizationId": principal.tenant_id,
        "accountEnabled": True,
    }


def _matcher(expression: str | None) -> Callable[[dict[str, Any]], bool]:
    if not expression:
        return lambda sp: True
    for pattern, test in _FILTERS:
        match = pattern.match(expression.strip())
        if match:
            value = match["v"]
            return lambda sp: test(sp, value)
    raise HttpError(400, "Request_UnsupportedQuery", f"Unsupported query: '{expression}'.")


def register(router: Router, entra: EntraModel, base_url: str) -> None:
    """Add the Graph routes under /v1.0 of the main origin; tokens for Graph (the emulator's
    own origin, which its cloud metadata names as Graph, or graph.microsoft.com) only."""
    audiences = frozenset({base_url.rstrip("/"), GRAPH_AUDIENCE})

    def visible(request: Request) -> list[dict[str, Any]]:
        caller = entra.authenticate(request.headers.get("authorization"), audiences)
        return [
            service_principal(p)
            for p in entra.directory(caller.tenant_id)
            if p.visible or p.object_id == caller.object_id
        ]

    def listing(request: Request) -> Response:
        keep = _matcher(request.query.get("$filter"))
        return Response(200, {"value": [sp for sp in visible(request) if keep(sp)]})

    def one(request: Request) -> Response:
        wanted = request.params["id"].lower()
        for sp in visible(request):
            if wanted in (sp["id"].lower(), sp["appId"].lower()):
                return Response(200, sp)
        raise HttpError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{request.params['id']}' does not exist or one of its queried reference-"
            "property objects are not present.",
        )

    def by_ids(request: Request) -> Response:
        body = request.json()
        ids = {str(i).lower() for i in body.get("ids") or []}
        types = {str(t).lower() for t in body.get("types") or ["serviceprincipal"]}
        found = [sp for sp in visible(request) if sp["id"].lower() in ids]
        return Response(200, {"value": found if "serviceprincipal" in types else []})

    def users(request: Request) -> Response:
        visible(request)  # authenticated; the emulator's directories hold no users
        return Response(200, {"value": []})

    def me(request: Request) -> Response:
        visible(request)
        raise HttpError(
            400,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        )

    def create_principal(request: Request) -> Response:
        caller = entra.authenticate(request.headers.get("authorization"), audiences)
        app_id = str(request.json().get("appId") or "")
        return Response(201, service_principal(entra.install_application(app_id, caller.tenant_id)))

    def tenant_of(request: Request) -> str:
        return entra.authenticate(request.headers.get("authorization"), audiences).tenant_id

    def create_application(request: Request) -> Response:
        return Response(201, entra.apps.add(tenant_of(request), request.json()).to_json())

    def list_applications(request: Request) -> Response:
        keep = _matcher(request.query.get("$filter"))
        found = [a.to_json() for a in entra.apps.of_tenant(tenant_of(request))]
        return Response(200, {"value": [a for a in found if keep(a)]})

    def get_application(request: Request) -> Response:
        return Response(200, entra.apps.get(tenant_of(request), request.params["id"]).to_json())

    def update_application(request: Request) -> Response:
        entra.apps.update(entra.apps.get(tenant_of(request), request.params["id"]), request.json())
        return Response(204)

    def add_credential(request: Request) -> Response:
        app = entra.apps.get(tenant_of(request), request.params["id"])
        return Response(201, entra.apps.add_federated_credential(app, request.json()))

    def delete_credential(request: Request) -> Response:
        app = entra.apps.get(tenant_of(request), request.params["id"])
        entra.apps.remove_federated_credential(app, request.params["fic"])
        return Response(204)

    def delete_principal(request: Request) -> Response:
        # https://learn.microsoft.com/graph/api/serviceprincipal-delete: 204; the app is
        # uninstalled from the caller's tenant (its grants stay, naming a deleted principal)
        wanted = request.params["id"].lower()
        caller = entra.authenticate(request.headers.get("authorization"), audiences)
        for principal in entra.directory(caller.tenant_id):
            if principal.kind == "ServicePrincipal" and principal.object_id == wanted:
                entra.remove(principal.object_id)
                return Response(204)
        raise HttpError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{request.params['id']}' does not exist or one of its queried reference-"
            "property objects are not present.",
        )

    def list_credentials(request: Request) -> Response:
        app = entra.apps.get(tenant_of(request), request.params["id"])
        return Response(200, {"value": list(app.federated_credentials)})

    router.add("POST", "/v1.0/servicePrincipals", create_principal)
    router.add("POST", "/v1.0/applications", create_application)
    router.add("GET", "/v1.0/applications", list_applications)
    router.add("GET", "/v1.0/applications/{id}", get_application)
    router.add("PATCH", "/v1.0/applications/{id}", update_application)
    router.add("POST", "/v1.0/applications/{id}/federatedIdentityCredentials", add_credential)
    router.add("GET", "/v1.0/applications/{id}/federatedIdentityCredentials", list_credentials)
    router.add(
        "DELETE", "/v1.0/applications/{id}/federatedIdentityCredentials/{fic}", delete_credential
    )
    router.add("DELETE", "/v1.0/servicePrincipals/{id}", delete_principal)
    router.add("GET", "/v1.0/servicePrincipals", listing)
    router.add("GET", "/v1.0/servicePrincipals/{id}", one)
    router.add("POST", "/v1.0/directoryObjects/getByIds", by_ids)
    router.add("GET", "/v1.0/users", users)
    router.add("GET", "/v1.0/me", me)
