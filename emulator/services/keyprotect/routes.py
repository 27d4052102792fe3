"""Key Protect's HTTP surface: /api/v2/keys and the key actions, addressed by the
`bluemix-instance` header, authorized by IAM access policies."""

from __future__ import annotations

from collections.abc import Callable

from emulator.http import Request, Response, Router
from emulator.ibm_accounts import IbmAccounts, region_of
from emulator.services.ibm_iam.models import AuthenticationError, Caller
from emulator.services.keyprotect.models import (
    KEY_TYPE,
    POLICY_TYPE,
    Instance,
    Key,
    KeyProtectError,
    KeyProtectModel,
)

KeyHandler = Callable[[Request, Caller, Instance, KeyProtectModel], Response]
ACTIONS = ("wrap", "unwrap", "rewrap", "rotate", "disable", "enable")
STATE_ACTIONS = ("rotate", "disable", "enable")  # writes, answered 204


def _keys(keys: list[Key], status: int = 200, with_payload: bool = False) -> Response:
    body = {
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": len(keys)},
        "resources": [k.to_json(with_payload) for k in keys],
    }
    return Response(status, body, {"Content-Type": KEY_TYPE})


def register(router: Router, accounts: IbmAccounts) -> None:
    """Add the Key Protect routes: each call reaches its token's account's instances in the
    host's region."""

    def route(method: str, template: str, handler: KeyHandler) -> None:
        def served(request: Request) -> Response:
            try:
                caller, account = accounts.caller(request.headers.get("authorization"))
            except AuthenticationError as exc:
                raise KeyProtectError(401, "UNAUTHORIZED_ERR", str(exc)) from exc
            kp = account.keyprotect
            region = region_of(request, account.identity.region)
            instance = kp.instance(request.headers.get("bluemix-instance"), region)
            with kp.lock:
                return handler(request, caller, instance, kp)

        router.add(method, template, served)

    def create(
        request: Request, caller: Caller, instance: Instance, kp: KeyProtectModel
    ) -> Response:
        kp.authorize(caller, instance, write=True)
        return _keys([kp.create_key(instance, request.json(), caller)], 201)

    def list_keys(
        request: Request, caller: Caller, instance: Instance, kp: KeyProtectModel
    ) -> Response:
        kp.authorize(caller, instance, write=False)
        start = int(request.query.get("offset") or 0)
        limit = int(request.query.get("limit") or 200)
        keys = list(instance.keys.values())
        return _keys(keys[start : start + limit])

    def get(request: Request, caller: Caller, instance: Instance, kp: KeyProtectModel) -> Response:
        key = instance.key(request.params["id"])
        kp.authorize(caller, instance, write=False, key_id=key.id)
        return _keys([key], with_payload=True)

    def registrations(
        request: Request, caller: Caller, instance: Instance, kp: KeyProtectModel
    ) -> Response:
        key = instance.key(request.params["id"])
        kp.authorize(caller, instance, write=False, key_id=key.id)
        found = kp.registrations_of(key)
        body = {
            "metadata": {
                "collectionType": "application/vnd.ibm.kms.registration+json",
                "collectionTotal": len(found),
            },
            "resources": found,
        }
        return Response(200, body, {"Content-Type": "application/vnd.ibm.kms.registration+json"})

    def policies(
        request: Request, caller: Caller, instance: Instance, kp: KeyProtectModel
    ) -> Response:
        key = instance.key(request.params["id"])
        write = request.method == "PUT"
        kp.authorize(caller, instance, write=write, key_id=key.id)
        if write:
            kp.set_policies(key, request.json(), caller)
        found = [key.rotation_policy] if key.rotation_policy else []
        body = {
            "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": len(found)},
            "resources": found,
        }
        return Response(200, body, {"Content-Type": POLICY_TYPE})

    def action(
        request: Request, caller: Caller, instance: Instance, kp: KeyProtectModel
    ) -> Response:
        name = request.params.get("action") or request.query.get("action", "")
        if name not in ACTIONS:
            raise KeyProtectError(
                400,
                "BAD_BODY_ERR",
                f"action {name!r} is not supported: use one of {', '.join(ACTIONS)}.",
            )
        key = instance.key(request.params["id"])
        kp.authorize(caller, instance, write=name in STATE_ACTIONS, key_id=key.id)
        body = request.json()
        if name == "rotate":
            kp.rotate(key, body)
            return Response(204)
        if name in ("disable", "enable"):
            kp.set_enabled(key, name == "enable")
            return Response(204)
        return Response(200, getattr(kp, name)(key, body))

    route("POST", "/api/v2/keys", create)
    route("GET", "/api/v2/keys", list_keys)
    route("GET", "/api/v2/keys/{id}", get)
    route("GET", "/api/v2/keys/{id}/registrations", registrations)
    route("GET", "/api/v2/keys/{id}/policies", policies)
    route("PUT", "/api/v2/keys/{id}/policies", policies)
    route("POST", "/api/v2/keys/{id}/actions/{action}", action)
    route("POST", "/api/v2/keys/{id}", action)  # the older ?action=wrap form
