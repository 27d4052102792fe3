"""Role definitions (get by id, list with the `roleName eq '…'` filter) and the caller's own
permissions at a scope."""

from __future__ import annotations

import re

from emulator.http import HttpError, Request, Response, Router
from emulator.services.arm.models import ArmModel
from emulator.services.arm.routes import add_arm_route
from emulator.services.authorization.models import effective_assignments
from emulator.services.authorization.roles import (
    BUILT_IN_ROLES,
    ROLE_DEFINITION_TYPE,
    role_by_definition_id,
)
from emulator.services.entra.models import Principal


def register(router: Router, arm: ArmModel) -> None:
    """Add the role-definition routes (before ARM's generic routes)."""

    def list_definitions(request: Request, principal: Principal) -> Response:
        scope = request.params["scope"]
        wanted = re.search(r"roleName\s+eq\s+'([^']*)'", request.query.get("$filter", ""))
        roles = [
            r
            for r in BUILT_IN_ROLES.values()
            if wanted is None or r.name.lower() == wanted.group(1).lower()
        ]
        return Response(200, {"value": [r.to_json("/" + scope.strip("/")) for r in roles]})

    def get_definition(request: Request, principal: Principal) -> Response:
        role = BUILT_IN_ROLES.get(request.params["id"].lower())
        if role is None:
            raise HttpError(
                404,
                "RoleDefinitionDoesNotExist",
                f"The role definition '{request.params['id']}' does not exist.",
            )
        return Response(200, role.to_json("/" + request.params["scope"].strip("/")))

    def list_permissions(request: Request, principal: Principal) -> Response:
        """What the caller may do at the scope: one entry per role it holds there or above
        (`Permissions - List For Resource Group` / `List For Resource`,
        https://learn.microsoft.com/rest/api/authorization/permissions)."""
        scope = "/" + request.params["scope"].strip("/")
        if not arm.enforce_authorization:  # every call is allowed: say so
            everything = {"actions": ["*"], "notActions": [], "dataActions": ["*"]}
            return Response(200, {"value": [{**everything, "notDataActions": []}]})
        value = []
        for assignment in effective_assignments(arm, scope, principal.object_id):
            role = role_by_definition_id(assignment["properties"]["roleDefinitionId"])
            if role is not None:
                value.append(role.to_json(scope)["properties"]["permissions"][0])
        return Response(200, {"value": value})

    add_arm_route(
        router, arm, "GET", "/{scope:path}/providers/Microsoft.Authorization/permissions",
        list_permissions,
    )  # fmt: skip
    base = "/{scope:path}/providers/" + ROLE_DEFINITION_TYPE
    add_arm_route(router, arm, "GET", base, list_definitions)
    add_arm_route(router, arm, "GET", base + "/{id}", get_definition)
