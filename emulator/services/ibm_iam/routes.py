"""IBM IAM's HTTP surface: the token endpoint, Policy Management v1 and Identity v1."""

from __future__ import annotations

from collections.abc import Callable

from emulator.http import Request, Response, Router
from emulator.ibm_accounts import IbmAccounts
from emulator.services.ibm_iam.models import (
    AuthenticationError,
    Caller,
    IamApiError,
    IamModel,
    target,
)

IDENTITY_ROLES = frozenset({"Administrator", "Operator", "Editor"})

ApiHandler = Callable[[Request, Caller, IamModel], Response]


def register(router: Router, accounts: IbmAccounts, base_url: str) -> None:
    """Add the IAM routes (all on the main origin: IAM's paths do not collide with ARM's);
    each call acts in its token's account."""

    def api(method: str, template: str, handler: ApiHandler, identity: bool = False) -> None:
        def served(request: Request) -> Response:
            try:
                caller, account = accounts.caller(request.headers.get("authorization"))
            except AuthenticationError as exc:
                raise IamApiError(401, "authentication_failed", str(exc)) from exc
            iam = account.iam
            if identity and not iam.has_access(
                caller.iam_id, target("iam-identity", iam.account_id), IDENTITY_ROLES
            ):
                raise IamApiError(
                    403,
                    "insufficent_permissions",
                    f"{caller.iam_id} needs Operator or higher on iam-identity.",
                )
            return handler(request, caller, iam)

        router.add(method, template, served)

    def token(request: Request) -> Response:
        form = request.form()
        return Response(200, accounts.issuer(form.get("apikey", "")).issue_token(form))

    router.add("POST", "/identity/token", token)

    # -- Policy Management v1 -----------------------------------------------------------------
    def create_policy(request: Request, caller: Caller, iam: IamModel) -> Response:
        return Response(201, iam.create_policy(request.json(), caller).to_json(base_url))

    def list_policies(request: Request, caller: Caller, iam: IamModel) -> Response:
        found = iam.list_policies(request.query)
        return Response(200, {"policies": [p.to_json(base_url) for p in found]})

    def get_policy(request: Request, caller: Caller, iam: IamModel) -> Response:
        return Response(200, iam.get("policy", request.params["id"]).to_json(base_url))

    def delete_policy(request: Request, caller: Caller, iam: IamModel) -> Response:
        iam.delete_policy(request.params["id"])
        return Response(204)

    api("POST", "/v1/policies", create_policy)
    api("GET", "/v1/policies", list_policies)
    api("GET", "/v1/policies/{id}", get_policy)
    api("DELETE", "/v1/policies/{id}", delete_policy)

    # -- Identity v1 ------------------------------------------------------------------------
    def create_service_id(request: Request, caller: Caller, iam: IamModel) -> Response:
        return Response(201, iam.create_service_id(request.json()).to_json())

    def list_service_ids(request: Request, caller: Caller, iam: IamModel) -> Response:
        name = request.query.get("name")
        with iam.lock:
            found = [s for s in iam.service_ids.values() if name in (None, s.name)]
        return Response(200, {"offset": 0, "limit": 20, "serviceids": [s.to_json() for s in found]})

    def get_service_id(request: Request, caller: Caller, iam: IamModel) -> Response:
        return Response(200, iam.get("serviceid", request.params["id"]).to_json())

    def delete_service_id(request: Request, caller: Caller, iam: IamModel) -> Response:
        iam.delete_service_id(request.params["id"])
        return Response(204)

    def create_api_key(request: Request, caller: Caller, iam: IamModel) -> Response:
        return Response(201, iam.create_api_key(request.json()).to_json(with_value=True))

    def list_api_keys(request: Request, caller: Caller, iam: IamModel) -> Response:
        iam_id = request.query.get("iam_id")
        with iam.lock:
            found = [k for k in iam.api_keys.values() if iam_id in (None, k.iam_id)]
        return Response(200, {"offset": 0, "limit": 20, "apikeys": [k.to_json() for k in found]})

    def get_api_key(request: Request, caller: Caller, iam: IamModel) -> Response:
        return Response(200, iam.get("apikey", request.params["id"]).to_json())

    def delete_api_key(request: Request, caller: Caller, iam: IamModel) -> Response:
        iam.delete_api_key(request.params["id"])
        return Response(204)

    api("POST", "/v1/serviceids", create_service_id, identity=True)
    api("GET", "/v1/serviceids", list_service_ids, identity=True)
    api("GET", "/v1/serviceids/{id}", get_service_id, identity=True)
    api("DELETE", "/v1/serviceids/{id}", delete_service_id, identity=True)
    api("POST", "/v1/apikeys", create_api_key, identity=True)
    api("GET", "/v1/apikeys", list_api_keys, identity=True)
    api("GET", "/v1/apikeys/{id}", get_api_key, identity=True)
    api("DELETE", "/v1/apikeys/{id}", delete_api_key, identity=True)
