"""Resource Graph's HTTP surface: POST /providers/Microsoft.ResourceGraph/resources."""

from __future__ import annotations

from emulator.http import Request, Response, Router
from emulator.services.arm.routes import add_arm_route
from emulator.services.entra.models import Principal
from emulator.services.resourcegraph.models import ResourceGraphModel, quota_headers


def register(router: Router, graph: ResourceGraphModel) -> None:
    """Add the query route."""

    def resources(request: Request, principal: Principal) -> Response:
        remaining, resets = graph.take_quota(principal)
        body = request.json()
        page = graph.query(
            principal, body.get("subscriptions"), body.get("query", ""), body.get("options") or {}
        )
        return Response(200, page, quota_headers(remaining, resets))

    add_arm_route(
        router, graph.arm, "POST", "/providers/Microsoft.ResourceGraph/resources", resources
    )
