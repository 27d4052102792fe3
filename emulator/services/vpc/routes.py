"""The VPC API's HTTP surface under /v1 (https://cloud.ibm.com/apidocs/vpc/latest): every
call takes the `version` date and `generation=2` query parameters and an IAM bearer token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.http import Request, Response, Router
from emulator.ibm_accounts import IbmAccounts, region_of
from emulator.services.ibm_iam.models import AuthenticationError
from emulator.services.vpc.bare_metal import BareMetalServers, profiles
from emulator.services.vpc.errors import InvalidField, NotAuthorized, NotFound
from emulator.services.vpc.models import VpcModel

Handler = Callable[[Request, VpcModel], Any]


def _collection(name: str, items: list[dict[str, Any]], request: Request, href: str) -> Response:
    wanted = request.query.get("name")
    items = [i for i in items if wanted is None or i["name"] == wanted]
    body = {
        name: items,
        "limit": int(request.query.get("limit") or 50),
        "first": {"href": href},
        "total_count": len(items),
    }
    return Response(200, body)


def register(router: Router, accounts: IbmAccounts) -> None:
    """Add the VPC routes (in front: /v1/... is VPC's alone): each call reaches its token's
    account's VPC in the host's region."""
    routes: list[tuple[str, str, Callable[[Request], Response]]] = []

    def route(method: str, template: str, handler: Handler, status: int = 200) -> None:
        def served(request: Request) -> Response:
            try:
                _, account = accounts.caller(request.headers.get("authorization"))
            except AuthenticationError as exc:
                raise NotAuthorized(f"Not authorized: {exc}") from exc
            if not request.query.get("version"):
                raise InvalidField("version query parameter is required", "version")
            vpc = accounts.vpc(account, region_of(request, account.identity.region))
            result = handler(request, vpc)
            if isinstance(result, Response):
                return result
            return Response(status) if result is None else Response(status, result)

        routes.append((method, template, served))

    def body(request: Request) -> dict[str, Any]:
        data = request.json() if request.body else {}
        if not isinstance(data, dict):
            raise InvalidField("the request body must be a JSON object")
        return data

    def image(request: Request, vpc: VpcModel) -> dict[str, Any]:
        return vpc.image_json(vpc.image(request.params["id"]))

    def images(request: Request, vpc: VpcModel) -> Response:
        with vpc.lock:
            ids = list(vpc.images)
        shown = [vpc.image_json(vpc.image(i)) for i in ids]
        return _collection("images", shown, request, f"{vpc.base}/images")

    def one_os(request: Request, vpc: VpcModel) -> dict[str, Any]:
        found = vpc.operating_systems.get(request.params["name"])
        if found is None:
            raise NotFound(f"Operating system not found: {request.params['name']}")
        return found

    def instance_json(vpc: VpcModel, rid: str) -> dict[str, Any]:
        found = vpc.instance(rid)
        return vpc.resource_json(
            found, "instance", status=found.status, status_reasons=found.reasons
        )

    def instances(request: Request, vpc: VpcModel) -> Response:
        with vpc.lock:
            ids = list(vpc.instances)
        return _collection(
            "instances", [instance_json(vpc, i) for i in ids], request, f"{vpc.base}/instances"
        )

    def vpc_json(vpc: VpcModel, rid: str) -> dict[str, Any]:
        return vpc.resource_json(vpc.get(vpc.vpcs, rid, "VPC"), "vpc", status="available")

    def subnet_json(vpc: VpcModel, rid: str) -> dict[str, Any]:
        return vpc.resource_json(vpc.get(vpc.subnets, rid, "Subnet"), "subnet", status="available")

    route("POST", "/v1/images", lambda r, vpc: vpc.image_json(vpc.create_image(body(r))), 201)
    route("GET", "/v1/images", images)
    route("GET", "/v1/images/{id}", image)
    route("DELETE", "/v1/images/{id}", lambda r, vpc: vpc.delete_image(r.params["id"]), 202)
    route(
        "GET",
        "/v1/operating_systems",
        lambda r, vpc: _collection(
            "operating_systems",
            list(vpc.operating_systems.values()),
            r,
            f"{vpc.base}/operating_systems",
        ),
    )
    route("GET", "/v1/operating_systems/{name}", one_os)
    route(
        "GET",
        "/v1/instance/profiles",
        lambda r, vpc: {"profiles": list(vpc.profiles.values())},
    )
    route("POST", "/v1/vpcs", lambda r, vpc: vpc_json(vpc, vpc.create_vpc(body(r)).id), 201)
    route(
        "GET",
        "/v1/vpcs",
        lambda r, vpc: _collection("vpcs", [vpc_json(vpc, i) for i in list(vpc.vpcs)], r, vpc.base),
    )
    route("GET", "/v1/vpcs/{id}", lambda r, vpc: vpc_json(vpc, r.params["id"]))
    route(
        "POST", "/v1/subnets", lambda r, vpc: subnet_json(vpc, vpc.create_subnet(body(r)).id), 201
    )
    route(
        "GET",
        "/v1/subnets",
        lambda r, vpc: _collection(
            "subnets", [subnet_json(vpc, i) for i in list(vpc.subnets)], r, vpc.base
        ),
    )
    route("GET", "/v1/subnets/{id}", lambda r, vpc: subnet_json(vpc, r.params["id"]))
    servers: dict[VpcModel, BareMetalServers] = {}

    def bare_metal(vpc: VpcModel) -> BareMetalServers:
        return servers.setdefault(vpc, BareMetalServers(vpc))

    route("POST", "/v1/bare_metal_servers", lambda r, vpc: bare_metal(vpc).create(body(r)), 201)
    route("GET", "/v1/bare_metal_servers/{id}", lambda r, vpc: bare_metal(vpc).json(r.params["id"]))
    route("GET", "/v1/bare_metal_server/profiles", lambda r, vpc: profiles(vpc.base))
    route(
        "POST",
        "/v1/instances",
        lambda r, vpc: instance_json(vpc, vpc.create_instance(body(r)).id),
        201,
    )
    route("GET", "/v1/instances", instances)
    route("GET", "/v1/instances/{id}", lambda r, vpc: instance_json(vpc, r.params["id"]))
    route(
        "POST",
        "/v1/instances/{id}/actions",
        lambda r, vpc: vpc.instance_action(r.params["id"], body(r)),
        201,
    )
    for method, template, handler in reversed(routes):
        router.add(method, template, handler)
        router.routes.insert(0, router.routes.pop())
