"""Managed HSM's HTTP surface beyond the keys (which the Key Vault routes serve on each HSM's
origin): deleted HSMs on ARM, and on the data plane the security domain download and local
RBAC as `KeyVaultAccessControlClient` calls them (paths and shapes:
https://github.com/Azure/azure-rest-api-specs/blob/main/specification/keyvault/data-plane/
Microsoft.KeyVault/preview/7.2-preview/securitydomain.json and rbac.json)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from emulator.http import HttpError, Request, Response, Router
from emulator.services.arm.routes import add_arm_route
from emulator.services.entra.models import Principal
from emulator.services.keyvault.routes import Caller
from emulator.services.managedhsm import securitydomain
from emulator.services.managedhsm.models import HSM_TYPE, ManagedHsmModel, normal_scope
from emulator.services.managedhsm.roles import HSM_ROLES, role_of


def register(router: Router, model: ManagedHsmModel, caller: Caller) -> None:
    """Add the managed HSM routes; `caller` authenticates data-plane requests."""
    arm = model.arm
    deleted = (
        "/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}"
        "/deletedManagedHSMs/{name}"
    )

    def list_deleted(request: Request, principal: Principal) -> Response:
        found = model.list_deleted(arm.subscription(request.params["sub"]).subscription_id)
        return Response(200, {"value": [d.to_json() for d in found]})

    def get_deleted(request: Request, principal: Principal) -> Response:
        p = request.params
        return Response(200, model.deleted_hsm(p["sub"], p["name"], p["loc"]).to_json())

    def purge_deleted(request: Request, principal: Principal) -> Response:
        """Purged at once; answered 202 with a Location monitor, the only answer the spec
        (and the SDK) accepts."""
        p = request.params
        model.purge(p["sub"], p["loc"], p["name"])
        with arm.lock:
            op = arm._start_operation(  # the ARM model's one operation factory (private)
                "delete", request.path, "Microsoft.KeyVault", p["loc"], "POST", request.path
            )
        monitor = (
            f"https://{request.host}/subscriptions/{p['sub']}/providers/Microsoft.KeyVault/"
            f"locations/{p['loc']}/operationResults/{op.id}?"
            + urlencode({"api-version": request.query.get("api-version", "")})
        )
        return Response(202, None, {"Location": monitor})

    add_arm_route(
        router,
        arm,
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.KeyVault/deletedManagedHSMs",
        list_deleted,
    )
    add_arm_route(router, arm, "GET", deleted, get_deleted)
    add_arm_route(router, arm, "POST", deleted + "/purge", purge_deleted)

    def hsm_route(method: str, template: str, handler: Any, active: bool = True) -> None:
        """A data-plane route of HSM origins only (a vault answers it 404), refused before
        activation unless `active` is False."""

        def served(request: Request) -> Response:
            _, resource, principal = caller(request)
            if resource["type"] != HSM_TYPE:
                raise HttpError(404, "NotFound", f"No operation '{request.path}' on a vault.")
            if active:
                model.require_active(resource)
            with arm.lock, model.lock:
                return handler(request, resource, principal, f"https://{request.host}")

        router.add(method, template, served, ports="vault")

    def download(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        model.require(resource, principal, "securitydomain/download/action", "/")
        if model.state(resource).downloaded:
            raise HttpError(
                409,
                "Conflict",
                f"The security domain of '{resource['name']}' was already downloaded.",
            )
        value = securitydomain.download(request.json())
        model.activate(resource)
        return Response(
            202,
            {"value": value},
            {
                "Azure-AsyncOperation": f"{origin}/securitydomain/download/pending",
                "Retry-After": "0",
            },
        )

    def download_pending(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        model.require(resource, principal, "securitydomain/download/read", "/")
        if not model.state(resource).downloaded:
            raise HttpError(404, "NotFound", "No security domain download was started.")
        return Response(
            200,
            {"status": "Success", "status_details": "The security domain was downloaded."},
        )

    def scope_of(request: Request) -> str:
        return normal_scope(request.params.get("scope") or "/")

    def list_definitions(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        model.require(resource, principal, "roleDefinitions/read/action", scope_of(request))
        return Response(200, {"value": [r.to_json() for r in HSM_ROLES.values()]})

    def get_definition(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        model.require(resource, principal, "roleDefinitions/read/action", scope_of(request))
        role = role_of(request.params["id"])
        if role is None:
            raise HttpError(
                404, "RoleDefinitionNotFound", f"Role definition {request.params['id']} not found."
            )
        return Response(200, role.to_json())

    def assignment_name(request: Request) -> str:
        return request.params["id"].lower()

    def put_assignment(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        scope = scope_of(request)
        model.require(resource, principal, "roleAssignments/write/action", scope)
        props = request.json().get("properties") or {}
        assignment = model.assign(
            resource,
            scope,
            request.params["id"],
            str(props.get("roleDefinitionId") or ""),
            str(props.get("principalId") or ""),
        )
        return Response(201, assignment.to_json())

    def get_assignment(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        model.require(resource, principal, "roleAssignments/read/action", scope_of(request))
        found = model.state(resource).assignments.get(assignment_name(request))
        return assignment_found(request, found)

    def delete_assignment(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        model.require(resource, principal, "roleAssignments/delete/action", scope_of(request))
        found = model.state(resource).assignments.pop(assignment_name(request), None)
        return assignment_found(request, found)

    def list_assignments(
        request: Request, resource: dict[str, Any], principal: Principal, origin: str
    ) -> Response:
        scope = scope_of(request)
        model.require(resource, principal, "roleAssignments/read/action", scope)
        found = [
            a.to_json() for a in model.state(resource).assignments.values() if a.scope == scope
        ]
        return Response(200, {"value": found})

    hsm_route("POST", "/securitydomain/download", download, active=False)
    hsm_route("GET", "/securitydomain/download/pending", download_pending, active=False)
    authorization = "/providers/Microsoft.Authorization"
    for prefix in ("", "{scope:path}"):
        hsm_route("GET", f"{prefix}{authorization}/roleDefinitions", list_definitions)
        hsm_route("GET", f"{prefix}{authorization}/roleDefinitions/{{id}}", get_definition)
        hsm_route("GET", f"{prefix}{authorization}/roleAssignments", list_assignments)
        hsm_route("PUT", f"{prefix}{authorization}/roleAssignments/{{id}}", put_assignment)
        hsm_route("GET", f"{prefix}{authorization}/roleAssignments/{{id}}", get_assignment)
        hsm_route("DELETE", f"{prefix}{authorization}/roleAssignments/{{id}}", delete_assignment)


def assignment_found(request: Request, found: Any) -> Response:
    """The role assignment read or removed, or Azure's 404 for it."""
    if found is None:
        raise HttpError(
            404, "RoleAssignmentNotFound", f"Role assignment {request.params['id']} not found."
        )
    return Response(200, found.to_json())
