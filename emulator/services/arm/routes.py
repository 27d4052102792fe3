"""ARM's HTTP surface: cloud metadata, subscriptions, resource groups, providers, features,
long-running operation monitors and the generic resource routes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from emulator.http import HttpError, Request, Response, Router
from emulator.services.arm import ids, jsonc, locations
from emulator.services.arm.models import ArmModel, Operation, failure_error, public
from emulator.services.authorization.models import (
    holds_role_within,
    principal_allowed,
    readable,
)
from emulator.services.entra.models import ARM_AUDIENCES, Principal

ArmHandler = Callable[[Request, Principal], Response]


def add_arm_route(
    router: Router, arm: ArmModel, method: str, template: str, handler: ArmHandler
) -> None:
    """Add a management-plane route: bearer token for ARM and api-version required."""

    def authenticated(request: Request) -> Response:
        principal = arm.entra.authenticate(request.headers.get("authorization"), ARM_AUDIENCES)
        if not request.query.get("api-version"):
            raise HttpError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        check_subscription(arm, request.path, principal)
        if arm.enforce_authorization:
            check_authorization(arm, request, principal)
        return handler(request, principal)

    router.add(method, template, authenticated)


def body_of(request: Request) -> Any:
    """A management-plane request body, parsed as ARM's lenient parser does (comments, bare
    property names: see jsonc)."""
    if not request.body:
        return {}
    try:
        return jsonc.loads(request.body)
    except ValueError as exc:
        raise HttpError(
            400, "InvalidRequestContent", f"The request body is not JSON: {exc}"
        ) from exc


def check_subscription(arm: ArmModel, path: str, principal: Principal) -> None:
    """Under /subscriptions/{id}: 404 SubscriptionNotFound for an unknown id, and 401
    InvalidAuthenticationTokenTenant for a token of another tenant than the subscription's
    (the messages ARM gives: https://github.com/Azure/azure-cli/issues/33657,
    https://github.com/Azure/azure-sdk-for-net/issues/49391)."""
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        return
    sub = arm.subscription(parts[1])
    if sub.tenant_id != principal.tenant_id:
        raise HttpError(
            401,
            "InvalidAuthenticationTokenTenant",
            f"The access token is from the wrong issuer 'https://sts.windows.net/"
            f"{principal.tenant_id}/'. It must match the tenant 'https://sts.windows.net/"
            f"{sub.tenant_id}/' associated with this subscription. Please use the authority "
            f"(URL) 'https://login.windows.net/{sub.tenant_id}' to get the token.",
            headers={
                "WWW-Authenticate": f'Bearer authorization_uri="https://login.windows.net/'
                f'{sub.tenant_id}", error="invalid_token", '
                'error_description="The access token is from the wrong issuer."'
            },
        )


def check_authorization(arm: ArmModel, request: Request, principal: Principal) -> None:
    """403 AuthorizationFailed unless the caller's role assignments allow the call: a write
    or action on its target, a read on what it reads (a list ARM filters to what the caller
    can read needs only a role somewhere in the subscription). Message as ARM gives it, e.g.
    https://github.com/Azure/Azure-Landing-Zones/issues/3668 (a write),
    https://github.com/Azure/azure-rest-api-specs/issues/23472 (a read),
    https://github.com/microsoft/vscode-cosmosdb/issues/1090 (a subscription's list)."""
    wanted = ids.write_action(request.method, request.path)
    if wanted is not None:
        action, scope = wanted
        if principal_allowed(arm, principal.object_id, action, scope):
            return
    elif read := ids.read_action(request.method, request.path):
        action, scope = read.action, read.scope
        if principal_allowed(arm, principal.object_id, action, scope) or (
            read.filtered and holds_role_within(arm, principal.object_id, scope)
        ):
            return
    else:
        return
    raise HttpError(
        403,
        "AuthorizationFailed",
        f"The client '{principal.client_id}' with object id '{principal.object_id}' does not "
        f"have authorization to perform action '{action}' over scope '{scope}' or the scope is "
        "invalid. If access was recently granted, please refresh your credentials.",
    )


def register(router: Router, arm: ArmModel, base_url: str) -> None:
    """Add the ARM routes; `base_url` is the emulator's https origin. Services with routes
    more specific than the generic resource routes register theirs first."""

    def arm_route(method: str, template: str, handler: ArmHandler) -> None:
        add_arm_route(router, arm, method, template, handler)

    def page(request: Request, items: list[dict[str, Any]]) -> Response:
        start = int(request.query.get("$skiptoken") or 0)
        end = start + arm.page_size
        body: dict[str, Any] = {"value": [public(i) for i in items[start:end]]}
        if end < len(items):
            query = dict(request.query, **{"$skiptoken": str(end)})
            body["nextLink"] = f"{base_url}{request.path}?{urlencode(query)}"
        return Response(200, body)

    def monitor_url(op: Operation, kind: str, request: Request) -> str:
        query = urlencode({"api-version": request.query["api-version"]})
        return (
            f"{base_url}/subscriptions/{ids.subscription_of(op.resource_id)}/providers/"
            f"{op.namespace}/locations/{op.location}/{kind}/{op.id}?{query}"
        )

    def lro_headers(op: Operation | None, style: str, request: Request) -> dict[str, str]:
        if op is None:
            return {}
        if style == "azure-async-operation":
            return {"Azure-AsyncOperation": monitor_url(op, "operationStatuses", request)}
        if style == "location":
            return {"Location": monitor_url(op, "operationResults", request)}
        return {}

    # -- cloud metadata, subscriptions, tenants ---------------------------------------------
    def metadata(request: Request) -> Response:
        return Response(200, cloud_metadata(base_url))

    def list_subscriptions(request: Request, principal: Principal) -> Response:
        with arm.lock:
            subs = [s for s in arm.subscriptions.values() if s.tenant_id == principal.tenant_id]
        if arm.enforce_authorization:  # the subscriptions where the caller holds a role
            subs = [
                s
                for s in subs
                if holds_role_within(
                    arm, principal.object_id, f"/subscriptions/{s.subscription_id}"
                )
            ]
        return page(request, [s.to_json() for s in subs])

    def get_subscription(request: Request, principal: Principal) -> Response:
        return Response(200, arm.subscription(request.params["sub"]).to_json())

    def list_locations(request: Request, principal: Principal) -> Response:
        sub = arm.subscription(request.params["sub"]).subscription_id
        return Response(200, {"value": locations.location_list(sub)})

    def list_tenants(request: Request, principal: Principal) -> Response:
        tenant = principal.tenant_id
        return page(
            request,
            [
                {
                    "id": f"/tenants/{tenant}",
                    "tenantId": tenant,
                    "displayName": arm.entra.tenants[tenant],
                    "tenantCategory": "Home",
                }
            ],
        )

    router.add("GET", "/metadata/endpoints", metadata)
    arm_route("GET", "/subscriptions", list_subscriptions)
    arm_route("GET", "/tenants", list_tenants)
    arm_route("GET", "/subscriptions/{sub}", get_subscription)
    arm_route("GET", "/subscriptions/{sub}/locations", list_locations)

    # -- resource groups -------------------------------------------------------------------
    def rg_id(request: Request) -> str:
        return f"/subscriptions/{request.params['sub']}/resourceGroups/{request.params['rg']}"

    def put_group(request: Request, principal: Principal) -> Response:
        status, body = arm.put_resource_group(
            request.params["sub"], request.params["rg"], request.json()
        )
        return Response(status, body)

    def get_group(request: Request, principal: Principal) -> Response:
        arm.subscription(request.params["sub"])
        return Response(200, public(arm.resource_group(rg_id(request))))

    def head_group(request: Request, principal: Principal) -> Response:
        return Response(204 if arm.get(rg_id(request)) else 404)

    def patch_group(request: Request, principal: Principal) -> Response:
        group = arm.resource_group(rg_id(request))
        if "tags" in request.json():
            group["tags"] = request.json()["tags"] or {}
        return Response(200, public(group))

    def delete_group(request: Request, principal: Principal) -> Response:
        op = arm.delete_resource_group(request.params["sub"], request.params["rg"])
        if op is None:
            raise HttpError(
                404,
                "ResourceGroupNotFound",
                f"Resource group '{request.params['rg']}' could not be found.",
            )
        return Response(202, None, lro_headers(op, "location", request))

    def list_groups(request: Request, principal: Principal) -> Response:
        sub = request.params["sub"]
        arm.subscription(sub)
        groups = arm.children(
            f"/subscriptions/{sub}/resourceGroups", "Microsoft.Resources/resourceGroups"
        )
        return page(request, readable(arm, principal.object_id, groups))

    def list_group_resources(request: Request, principal: Principal) -> Response:
        group = arm.resource_group(rg_id(request))
        prefix = group["id"].lower() + "/providers/"
        with arm.lock:
            found = [r for k, r in arm.resources.items() if k.startswith(prefix)]
        found = readable(arm, principal.object_id, top_level(found))
        return page(request, filtered(found, request.query.get("$filter")))

    def list_resources(request: Request, principal: Principal) -> Response:
        sub = arm.subscription(request.params["sub"]).subscription_id
        prefix = f"/subscriptions/{sub}/resourcegroups/".lower()
        with arm.lock:
            found = [
                r for k, r in arm.resources.items() if k.startswith(prefix) and "/providers/" in k
            ]
        found = readable(arm, principal.object_id, top_level(found))
        return page(request, filtered(found, request.query.get("$filter")))

    group = "/subscriptions/{sub}/resourceGroups/{rg}"
    arm_route("GET", "/subscriptions/{sub}/resourceGroups", list_groups)
    arm_route("PUT", group, put_group)
    arm_route("GET", group, get_group)
    arm_route("HEAD", group, head_group)
    arm_route("PATCH", group, patch_group)
    arm_route("DELETE", group, delete_group)
    arm_route("GET", group + "/resources", list_group_resources)
    arm_route("GET", "/subscriptions/{sub}/resources", list_resources)

    # -- operation monitors ----------------------------------------------------------------
    def operation_status(request: Request, principal: Principal) -> Response:
        return Response(200, arm.operation(request.params["op"]).status_body())

    def operation_result(request: Request, principal: Principal) -> Response:
        op = arm.operation(request.params["op"])
        if op.status == "InProgress":
            return Response(202, None, {"Location": monitor_url(op, "operationResults", request)})
        if op.status == "Failed":
            status = op.fail.status if op.fail and 400 <= op.fail.status < 500 else 400
            return Response(status, {"error": op.error or failure_error(op.fail)})
        return Response(200, op.result) if op.result else Response(204)

    monitors = "/subscriptions/{sub}/providers/{ns}/locations/{loc}"
    arm_route("GET", monitors + "/operationStatuses/{op}", operation_status)
    arm_route("GET", monitors + "/operationResults/{op}", operation_result)

    # -- providers -------------------------------------------------------------------------
    region_names = [locations.DISPLAY_NAMES[n] for n in sorted(locations.NAMES)]

    def provider_json(request: Request, namespace: str) -> dict[str, Any]:
        provider = arm.provider(namespace, request.params["sub"])
        types = sorted(
            {
                t.split("/", 1)[1]
                for t in (s.type for s in arm.types.values())
                if t.lower().startswith(provider.namespace.lower() + "/")
            }
        )
        return {
            "id": f"/subscriptions/{request.params['sub']}/providers/{provider.namespace}",
            "namespace": provider.namespace,
            "registrationState": provider.state,
            "registrationPolicy": "RegistrationRequired",
            "resourceTypes": [
                {
                    "resourceType": t,
                    "locations": region_names,
                    "apiVersions": list(API_VERSIONS.get(provider.namespace, DEFAULT_API_VERSIONS)),
                }
                for t in types
            ],
        }

    def get_provider(request: Request, principal: Principal) -> Response:
        return Response(200, provider_json(request, request.params["ns"]))

    def list_providers(request: Request, principal: Principal) -> Response:
        return page(
            request,
            [provider_json(request, ns) for ns in sorted(arm.namespaces.values())],
        )

    def register_provider(request: Request, principal: Principal) -> Response:
        arm.register_provider(request.params["ns"], request.params["sub"])
        return Response(200, provider_json(request, request.params["ns"]))

    def unregister_provider(request: Request, principal: Principal) -> Response:
        provider = arm.provider(request.params["ns"], request.params["sub"])
        provider.state = "Unregistered"
        return Response(200, provider_json(request, request.params["ns"]))

    # -- features (registered before the provider routes they would otherwise match) ---------
    features = "/subscriptions/{sub}/providers/Microsoft.Features/providers/{ns}/features"

    def get_feature(request: Request, principal: Principal) -> Response:
        sub = arm.subscription(request.params["sub"]).subscription_id
        feature = arm.feature(request.params["ns"], request.params["name"], sub)
        return Response(200, feature.to_json(sub))

    def register_feature(request: Request, principal: Principal) -> Response:
        sub = arm.subscription(request.params["sub"]).subscription_id
        feature = arm.register_feature(request.params["ns"], request.params["name"], sub)
        return Response(200, feature.to_json(sub))

    def unregister_feature(request: Request, principal: Principal) -> Response:
        sub = arm.subscription(request.params["sub"]).subscription_id
        feature = arm.unregister_feature(request.params["ns"], request.params["name"], sub)
        return Response(200, feature.to_json(sub))

    def list_features(request: Request, principal: Principal) -> Response:
        sub = arm.subscription(request.params["sub"]).subscription_id
        namespace = request.params.get("ns")
        found = [
            f
            for f in arm.features_of(sub)
            if namespace is None or f.namespace.lower() == namespace.lower()
        ]
        return page(request, [f.to_json(sub) for f in found])

    arm_route("GET", features, list_features)
    arm_route("GET", "/subscriptions/{sub}/providers/Microsoft.Features/features", list_features)
    arm_route("GET", features + "/{name}", get_feature)
    arm_route("POST", features + "/{name}/register", register_feature)
    arm_route("POST", features + "/{name}/unregister", unregister_feature)
    arm_route("GET", "/subscriptions/{sub}/providers", list_providers)
    arm_route("GET", "/subscriptions/{sub}/providers/{ns}", get_provider)
    arm_route("POST", "/subscriptions/{sub}/providers/{ns}/register", register_provider)
    arm_route("POST", "/subscriptions/{sub}/providers/{ns}/unregister", unregister_provider)

    # -- generic resources -----------------------------------------------------------------
    def resource(request: Request, principal: Principal) -> Response:
        rid = ids.parse(request.path)
        if not rid.name and request.method == "POST":  # an action on a resource
            parent, action = request.path.rstrip("/").rsplit("/", 1)
            result = arm.action(parent, action, body_of(request))
            return result if isinstance(result, Response) else Response(200, result)
        spec = arm.spec_for(rid)
        if not rid.name:  # a collection
            if request.method == "GET":
                scope = rid.parent if len(rid.types) > 1 else rid.scope
                if len(rid.types) > 1:
                    arm.require(scope)
                elif rid.resource_group:
                    arm.resource_group(scope)
                return page(
                    request, readable(arm, principal.object_id, arm.children(scope, spec.type))
                )
            raise HttpError(
                405,
                "UnsupportedOperation",
                f"The emulator does not support {request.method} on '{request.path}'.",
            )
        if request.method in ("PUT", "PATCH"):
            status, body, op = arm.put(
                request.path,
                body_of(request),
                principal,
                request.method,
                request.query["api-version"],
            )
            return Response(status, body, lro_headers(op, spec.lro_for(request.method), request))
        if request.method == "DELETE":
            status, op = arm.delete(request.path)
            return Response(status, None, lro_headers(op, spec.delete_lro, request))
        if request.method == "HEAD":
            return Response(204 if arm.get(rid.id()) else 404)
        stored = arm.require(rid.id())
        found = public(stored)
        if request.query.get("$expand"):
            extra = spec.hooks.expand(stored, request.query["$expand"])
            found["properties"] = {**found.get("properties", {}), **extra}
        return Response(200, found)

    for method in ("GET", "PUT", "PATCH", "DELETE", "POST", "HEAD"):
        arm_route(method, "/subscriptions/{rest:path}", resource)


def top_level(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ARM's resource lists hold: top-level resources, not child resources (agent pools,
    subnets) nor extension resources (role assignments)
    (https://learn.microsoft.com/en-us/rest/api/resources/resources/list-by-resource-group)."""
    kinds = [r["type"].lower() for r in resources]
    return [
        r
        for r, kind in zip(resources, kinds, strict=True)
        if kind.count("/") == 1 and not kind.startswith("microsoft.authorization/")
    ]


def _field(resource: dict[str, Any], name: str) -> str:
    """A resource's value for a `$filter` field, lower-case."""
    if name == "resourcegroup":
        return str(ids.resource_group_of(resource["id"]) or "").lower()
    return str(resource.get("type" if name == "resourcetype" else "name", "")).lower()


# Stable api-versions each provider lists, newest first (`az resource show --resource-type`
# uses the newest non-preview one; the emulator serves any). From the stable folders of
# https://github.com/Azure/azure-rest-api-specs/tree/main/specification (compute,
# containerservice, keyvault, msi, containerregistry, authorization, resources, network).
API_VERSIONS = {
    "Microsoft.Compute": ("2024-11-01", "2024-07-01", "2024-03-03", "2024-03-02"),
    "Microsoft.ContainerService": ("2025-05-01", "2025-04-01", "2024-10-01"),
    "Microsoft.KeyVault": ("2024-11-01", "2023-07-01"),
    "Microsoft.ManagedIdentity": ("2024-11-30", "2023-01-31"),
    "Microsoft.ContainerRegistry": ("2025-04-01", "2023-07-01"),
    "Microsoft.Authorization": ("2022-04-01", "2020-10-01"),
    "Microsoft.Network": ("2024-05-01", "2024-01-01"),
    "Microsoft.Resources": ("2025-04-01", "2024-11-01"),
}
DEFAULT_API_VERSIONS = ("2024-01-01",)


def filtered(resources: list[dict[str, Any]], expression: str | None) -> list[dict[str, Any]]:
    """Resources sorted by id, matching ARM's `$filter` for resource lists as far as the
    emulator supports it: `resourceType eq '…'`, `name eq '…'` and `resourceGroup eq '…'`
    (what `az resource list -g` sends) clauses joined by `and`."""
    conditions = []
    for clause in re.split(r"\s+and\s+", expression or "", flags=re.IGNORECASE):
        if not clause.strip():
            continue
        match = re.fullmatch(
            r"\s*(resourceType|name|resourceGroup)\s+eq\s+'([^']*)'\s*", clause, re.IGNORECASE
        )
        if not match:
            raise HttpError(
                400,
                "InvalidFilterInQueryString",
                f"The emulator does not support the $filter clause '{clause.strip()}' on "
                "resource lists (only resourceType, name and resourceGroup eq '…', joined by "
                "'and').",
            )
        conditions.append((match[1].lower(), match[2].lower()))
    found = [r for r in resources if all(_field(r, f) == v for f, v in conditions)]
    return sorted(found, key=lambda r: r["id"].lower())


# DNS suffixes under a reserved name that never resolves (RFC 2606): a client that builds a
# host from a suffix (`az keyvault key show --vault-name`) fails locally instead of sending an
# emulator-issued token to a real service.
SUFFIX_DOMAIN = "byok-emulator.invalid"
SUFFIXES = (
    "azureDataLakeStoreFileSystem",
    "acrLoginServer",
    "sqlServerHostname",
    "azureDataLakeAnalyticsCatalogAndJob",
    "keyVaultDns",
    "storage",
    "azureFrontDoorEndpointSuffix",
    "storageSyncEndpointSuffix",
    "mhsmDns",
    "mysqlServerEndpoint",
    "postgresqlServerEndpoint",
    "mariadbServerEndpoint",
    "synapseAnalytics",
    "attestationEndpoint",
)


def cloud_metadata(base_url: str) -> dict[str, Any]:
    """ARM's cloud-metadata document (what `az cloud register` reads; the fields of
    https://management.azure.com/metadata/endpoints?api-version=2022-09-01, mapped by
    azure-cli's core/cloud.py `_arm_to_cli_mapper`). Every endpoint is the emulator, Microsoft
    Graph included (the CLI sends Graph requests to `microsoftGraphResourceId`); every suffix
    is under SUFFIX_DOMAIN. The audiences stay Azure's: they are token audiences that only the
    emulator's authority issues, never addresses."""
    root = base_url + "/"
    return {
        "portal": root,
        "authentication": {
            "loginEndpoint": base_url,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "media": root,
        "graphAudience": root,
        "graph": root,
        "name": "BYOKEmulator",
        "suffixes": {name: f"{name.lower()}.{SUFFIX_DOMAIN}" for name in SUFFIXES},
        "batch": root,
        "resourceManager": root,
        "vmImageAliasDoc": base_url + "/vm-image-aliases.json",
        "activeDirectoryDataLake": root,
        "sqlManagement": root,
        "gallery": root,
        "microsoftGraphResourceId": root,
        "appInsightsResourceId": root,
        "appInsightsTelemetryChannelResourceId": root,
        "attestationResourceId": root,
        "synapseAnalyticsResourceId": root,
        "logAnalyticsResourceId": root,
        "ossrdbmsResourceId": root,
    }
