"""`POST …/deployments/{name}/validate`: the deployment's checks without deploying (what
`az deployment group create` asks first). A valid deployment answers 200 with the
deployment's properties and `provisioningState` Succeeded; an invalid one answers 400 with
the error ARM gives (https://learn.microsoft.com/en-us/rest/api/resources/deployments/
validate)."""

from __future__ import annotations

from emulator.http import Request, Response, Router
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext
from emulator.services.arm.routes import add_arm_route, body_of
from emulator.services.deployments.models import DeploymentHooks
from emulator.services.entra.models import Principal

VALIDATE = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Resources/deployments/"
    "{name}/validate"
)


def register(router: Router, arm: ArmModel) -> None:
    """Add the validate route (before the generic ARM routes, which would take it for an
    action on an existing deployment)."""

    def validate(request: Request, principal: Principal) -> Response:
        path = request.path.rstrip("/").rsplit("/", 1)[0]
        rid = ids.parse(path)
        arm.resource_group(path)
        body = body_of(request)
        DeploymentHooks().validate(
            PutContext(arm, rid, body, arm.get(rid.id()), principal, "PUT", "")
        )
        props = body.get("properties") or {}
        return Response(
            200,
            {
                "id": rid.id(),
                "name": rid.name,
                "type": "Microsoft.Resources/deployments",
                "properties": {
                    "provisioningState": "Succeeded",
                    "mode": "Incremental",
                    "parameters": props.get("parameters") or {},
                    "templateHash": "0",
                },
            },
        )

    add_arm_route(router, arm, "POST", VALIDATE, validate)
