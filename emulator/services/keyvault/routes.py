"""Key Vault's HTTP surface: the accessPolicies management operation, ARM's key reads and
each vault's data plane (challenge authentication, network rules, keys, wrap and unwrap,
secure key release)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from emulator.http import HttpError, Request, Response, Router
from emulator.services.arm.routes import add_arm_route
from emulator.services.entra.models import Principal
from emulator.services.keyvault import crypto, release
from emulator.services.keyvault.models import (
    KeyVaultModel,
    KeyVersion,
    StoredKey,
    VaultData,
    key_not_found,
    network_refusal,
    recovery_level,
    update_access_policies,
)
from emulator.services.keyvault.rotation import checked_rotation_policy, default_rotation_policy
from emulator.services.keyvault.throttling import transaction_cost

VAULT_KEY_TYPE = "Microsoft.KeyVault/vaults/keys"
Caller = Callable[[Request], tuple[VaultData, dict[str, Any], Principal]]


def register(router: Router, keyvault: KeyVaultModel, base_url: str, tenant_id: str) -> Caller:
    """Add the Key Vault routes; `base_url` is the authority named in the challenge. Returns
    the data plane's caller check (challenge, token, tenant, api-version, network rules), which
    the managed HSM's own routes share."""
    arm = keyvault.arm

    def access_policy(request: Request, principal: Principal) -> Response:
        vault_id = request.path.rsplit("/accessPolicies/", 1)[0]
        policies = (request.json().get("properties") or {}).get("accessPolicies") or []
        new = update_access_policies(arm, vault_id, request.params["kind"], policies)
        return Response(
            200,
            {
                "id": request.path,
                "name": request.params["kind"],
                "type": "Microsoft.KeyVault/vaults/accessPolicies",
                "properties": {"accessPolicies": new},
            },
        )

    add_arm_route(
        router,
        arm,
        "PUT",
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}"
        "/accessPolicies/{kind}",
        access_policy,
    )

    deleted_vaults = (
        "/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}"
    )

    def list_deleted_vaults(request: Request, principal: Principal) -> Response:
        found = keyvault.list_deleted(arm.subscription(request.params["sub"]).subscription_id)
        return Response(200, {"value": [d.to_json() for d in found]})

    def get_deleted_vault(request: Request, principal: Principal) -> Response:
        p = request.params
        return Response(200, keyvault.deleted_vault(p["sub"], p["name"], p["loc"]).to_json())

    def purge_deleted_vault(request: Request, principal: Principal) -> Response:
        p = request.params
        keyvault.purge(p["sub"], p["loc"], p["name"])
        return Response(200)  # the SDK's poller accepts a synchronous 200

    add_arm_route(
        router,
        arm,
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.KeyVault/deletedVaults",
        list_deleted_vaults,
    )
    add_arm_route(router, arm, "GET", deleted_vaults, get_deleted_vault)
    add_arm_route(router, arm, "POST", deleted_vaults + "/purge", purge_deleted_vault)

    def challenge(resource: dict[str, Any]) -> dict[str, str]:
        """The bearer challenge naming the store's tenant as the authority and its token
        resource (vault.azure.net, or managedhsm.azure.net for an HSM)."""
        tenant = resource["properties"].get("tenantId") or tenant_id
        return {
            "WWW-Authenticate": f'Bearer authorization="{base_url}/{tenant}", '
            f'resource="{keyvault.audience(resource)}"'
        }

    def caller(request: Request) -> tuple[VaultData, dict[str, Any], Principal]:
        """The store served on this origin and the authenticated caller, or the error."""
        data, resource = keyvault.vault_for_port(request.port)
        if "authorization" not in request.headers:
            raise HttpError(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                headers=challenge(resource),
            )
        try:
            principal = arm.entra.authenticate(
                request.headers["authorization"], frozenset({keyvault.audience(resource)})
            )
        except HttpError as exc:
            raise HttpError(401, "Unauthorized", exc.message, headers=challenge(resource)) from exc
        vault_tenant = str(resource["properties"].get("tenantId") or tenant_id).lower()
        if principal.tenant_id != vault_tenant:
            raise HttpError(
                401,
                "Unauthorized",
                f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/"
                f"{vault_tenant}/, found https://sts.windows.net/{principal.tenant_id}/.",
                headers=challenge(resource),
            )
        if not request.query.get("api-version"):
            raise HttpError(400, "BadParameter", "The 'api-version' parameter is missing.")
        refusal = network_refusal(resource, principal)
        if refusal:
            raise refusal
        return data, resource, principal

    def data_route(method: str, template: str, operation: str, handler: Any) -> None:
        def served(request: Request) -> Response:
            data, resource, principal = caller(request)
            keyvault.authorize(resource, principal, operation, request.params.get("name"))
            # ARM's lock first, as ARM handlers take them (a set's PATCH resolves its key):
            # the other order deadlocks a key write against a concurrent ARM write
            with arm.lock, keyvault.lock:
                keyvault.draw(resource, cost_of(data, operation, request))
                return handler(request, data, f"https://{request.host}")

        router.add(method, template, served, ports="vault")

    def cost_of(data: VaultData, operation: str, request: Request) -> float:
        """What one transaction costs of the vault's throttling window: by the type and size
        of the key it names (of the key sent, for a create or import); a vault transaction
        when it names none (lists) or one that does not exist."""
        kty, size = None, None
        if operation in ("create", "import"):
            body = request.json()
            kty = body.get("kty") or (body.get("key") or {}).get("kty")
            size = body.get("key_size")
        elif (key := data.keys.get(request.params.get("name", "").lower())) and key.versions:
            kty = key.versions[-1].kty
            size = getattr(key.versions[-1].material, "key_size", None)
        return transaction_cost(kty, size, operation in ("create", "import", "rotate"))

    def live_key(data: VaultData, name: str) -> StoredKey:
        key = data.keys.get(name.lower())
        if key is None or key.deleted_date is not None:
            raise key_not_found(name)
        keyvault.rotate_due(key)
        return key

    def usable(key: StoredKey, version: str | None, operation: str) -> KeyVersion:
        v = key.version(version)
        if not v.enabled:
            raise HttpError(
                403,
                "Forbidden",
                f"Operation {operation} is not allowed on a disabled key.",
                inner="KeyDisabled",
            )
        if operation not in ("get",) and operation not in [o.lower() for o in v.key_ops]:
            raise HttpError(
                403,
                "Forbidden",
                f"Operation {operation} is not allowed by the key's key_ops.",
                inner="KeyOperationForbidden",
            )
        return v

    def vault_properties(data: VaultData) -> dict[str, Any]:
        resource = arm.get(data.resource_id)
        return resource["properties"] if resource else {}

    def check_key_type(data: VaultData, kty: str) -> None:
        keyvault.check_key_type(keyvault.vault_for_port(data.port)[1], kty)

    def bundle(data: VaultData, origin: str, key: StoredKey, v: KeyVersion) -> dict[str, Any]:
        jwk = crypto.public_jwk(v.material, v.kty)
        jwk["kid"] = f"{origin}/keys/{key.name}/{v.version}"
        jwk["key_ops"] = v.key_ops
        result = {"key": jwk, "attributes": attributes(data, v), "tags": v.tags}
        if v.release_policy:
            result["release_policy"] = v.release_policy
        return result

    def attributes(data: VaultData, v: KeyVersion) -> dict[str, Any]:
        level, days = recovery_level(vault_properties(data))
        attrs: dict[str, Any] = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": level,
            "recoverableDays": days,
            "exportable": v.exportable,
        }
        if v.exp:
            attrs["exp"] = v.exp
        if v.nbf:
            attrs["nbf"] = v.nbf
        return attrs

    def add_version(data: VaultData, name: str, v: KeyVersion) -> StoredKey:
        key = data.keys.get(name.lower())
        if key is not None and key.deleted_date is not None:
            raise HttpError(
                409,
                "Conflict",
                f"Key {name} is currently in a deleted but "
                "recoverable state, and its name cannot be reused; recover or "
                "purge it first.",
                inner="ObjectIsDeletedButRecoverable",
            )
        if key is None:
            key = data.keys[name.lower()] = StoredKey(name)
        if key.versions and key.versions[0].kty != v.kty:
            raise HttpError(
                400,
                "BadParameter",
                f"Key {name} is of type {key.versions[0].kty}; a new version cannot be {v.kty}.",
            )
        key.versions.append(v)
        return key

    def create_key(request: Request, data: VaultData, origin: str) -> Response:
        body = request.json()
        kty = body.get("kty", "")
        check_key_type(data, kty)
        material = crypto.generate(kty, body.get("key_size"), body.get("crv"))
        version = keyvault.new_version(kty, material, body)
        keyvault.check_release(keyvault.vault_for_port(data.port)[1], version)
        key = add_version(data, request.params["name"], version)
        return Response(200, bundle(data, origin, key, key.versions[-1]))

    def import_key(request: Request, data: VaultData, origin: str) -> Response:
        body = request.json()
        jwk = body.get("key") or {}
        material = crypto.from_jwk(jwk)
        kty = jwk["kty"] + ("-HSM" if body.get("Hsm") and "-HSM" not in jwk["kty"] else "")
        check_key_type(data, kty)
        body.setdefault("key_ops", jwk.get("key_ops"))
        version = keyvault.new_version(kty, material, body)
        keyvault.check_release(keyvault.vault_for_port(data.port)[1], version)
        key = add_version(data, request.params["name"], version)
        return Response(200, bundle(data, origin, key, key.versions[-1]))

    def get_key(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        return Response(200, bundle(data, origin, key, key.version(request.params.get("version"))))

    def update_key(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        v = key.version(request.params.get("version"))
        body = request.json()
        attrs = body.get("attributes") or {}
        if "enabled" in attrs:
            v.enabled = bool(attrs["enabled"])
        for name in ("exp", "nbf"):
            if name in attrs:
                setattr(v, name, attrs[name])
        if body.get("key_ops"):
            v.key_ops = list(body["key_ops"])
        if "tags" in body:
            v.tags = dict(body["tags"] or {})
        v.updated = int(keyvault.clock.now())
        return Response(200, bundle(data, origin, key, v))

    def rotate_key(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        return Response(200, bundle(data, origin, key, keyvault.rotated_version(key)))

    def key_item(
        data: VaultData, origin: str, key: StoredKey, v: KeyVersion, versioned: bool
    ) -> dict[str, Any]:
        kid = f"{origin}/keys/{key.name}" + (f"/{v.version}" if versioned else "")
        return {"kid": kid, "attributes": attributes(data, v), "tags": v.tags}

    def paged(request: Request, origin: str, items: list[dict[str, Any]]) -> Response:
        start = int(request.query.get("$skiptoken") or 0)
        size = int(request.query.get("maxresults") or 25)
        body: dict[str, Any] = {"value": items[start : start + size], "nextLink": None}
        if start + size < len(items):
            body["nextLink"] = (
                f"{origin}{request.path}?api-version="
                f"{request.query['api-version']}&maxresults={size}"
                f"&$skiptoken={start + size}"
            )
        return Response(200, body)

    def list_keys(request: Request, data: VaultData, origin: str) -> Response:
        keys = sorted(
            (k for k in data.keys.values() if k.deleted_date is None), key=lambda k: k.name.lower()
        )
        for k in keys:
            keyvault.rotate_due(k)
        return paged(
            request, origin, [key_item(data, origin, k, k.versions[-1], False) for k in keys]
        )

    def list_versions(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        return paged(request, origin, [key_item(data, origin, key, v, True) for v in key.versions])

    def crypto_op(operation: str, func: Any) -> Any:
        def handler(request: Request, data: VaultData, origin: str) -> Response:
            key = live_key(data, request.params["name"])
            v = usable(key, request.params.get("version"), operation.lower())
            body = request.json()
            if not body.get("alg") or not body.get("value"):
                raise HttpError(400, "BadParameter", "'alg' and 'value' are required.")
            result = func(v.material, body["alg"], crypto.unb64url(body["value"]), operation)
            return Response(
                200,
                {"kid": f"{origin}/keys/{key.name}/{v.version}", "value": crypto.b64url(result)},
            )

        return handler

    def deleted_bundle(data: VaultData, origin: str, key: StoredKey) -> dict[str, Any]:
        result = bundle(data, origin, key, key.versions[-1])
        result.update(
            recoveryId=f"{origin}/deletedkeys/{key.name}",
            deletedDate=key.deleted_date,
            scheduledPurgeDate=(key.deleted_date or 0)
            + recovery_level(vault_properties(data))[1] * 86400,
        )
        return result

    def release_key(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        v = key.version(request.params.get("version") or None)
        if not v.enabled:
            raise HttpError(
                403,
                "Forbidden",
                "Operation release is not allowed on a disabled key.",
                inner="KeyDisabled",
            )
        target = str(request.json().get("target") or "")
        release.check_release(v.release_policy, v.exportable, target)
        kid = f"{origin}/keys/{key.name}/{v.version}"
        return Response(200, {"value": release.release_result(kid, release.claims_of(target))})

    def delete_key(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        key.deleted_date = int(time.time())
        return Response(200, deleted_bundle(data, origin, key))

    def deleted_key(name: str, data: VaultData) -> StoredKey:
        key = data.keys.get(name.lower())
        if key is None or key.deleted_date is None:
            raise HttpError(404, "KeyNotFound", f"Deleted Key not found: {name}")
        return key

    def get_deleted(request: Request, data: VaultData, origin: str) -> Response:
        return Response(
            200, deleted_bundle(data, origin, deleted_key(request.params["name"], data))
        )

    def recover_key(request: Request, data: VaultData, origin: str) -> Response:
        key = deleted_key(request.params["name"], data)
        key.deleted_date = None
        return Response(200, bundle(data, origin, key, key.versions[-1]))

    def purge_key(request: Request, data: VaultData, origin: str) -> Response:
        key = deleted_key(request.params["name"], data)
        _, resource = keyvault.vault_for_port(request.port)
        if resource["properties"].get("enablePurgeProtection"):
            raise HttpError(
                403,
                "Forbidden",
                "Operation 'purge' is not allowed: the vault has purge protection enabled.",
                inner="PurgeProtectionEnabled",
            )
        del data.keys[key.name.lower()]
        return Response(204)

    def get_rotation_policy(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        policy = key.rotation_policy or default_rotation_policy()
        return Response(200, {"id": f"{origin}/keys/{key.name}/rotationpolicy", **policy})

    def set_rotation_policy(request: Request, data: VaultData, origin: str) -> Response:
        key = live_key(data, request.params["name"])
        key.rotation_policy = checked_rotation_policy(
            request.json(), key.rotation_policy, keyvault.clock.now()
        )
        return Response(
            200, {"id": f"{origin}/keys/{key.name}/rotationpolicy", **key.rotation_policy}
        )

    def arm_key(request: Request, principal: Principal) -> Response:
        """A key (or one version) read through ARM: the management plane, which the vault's
        network rules do not stop (https://github.com/MicrosoftDocs/azure-docs/issues/68668;
        the Key resource of https://learn.microsoft.com/rest/api/keyvault/keyvault/keys/get)."""
        p = request.params
        vault_id = request.path.split("/keys/", 1)[0]
        vault = arm.require(vault_id)
        with keyvault.lock:
            found = [
                d for d in keyvault.vaults.values() if d.resource_id.lower() == vault_id.lower()
            ]
            data = found[0] if found else None
            key = data.keys.get(p["key"].lower()) if data else None
            if data is None or key is None or key.deleted_date is not None:
                raise HttpError(
                    404, "ResourceNotFound", f"The key '{vault_id}/keys/{p['key']}' was not found."
                )
            keyvault.rotate_due(key)
            v = key.version(p.get("version"))
        origin = str(vault["properties"]["vaultUri"]).rstrip("/")
        versioned = bool(p.get("version"))
        props: dict[str, Any] = {
            "attributes": attributes(data, v),
            "kty": v.kty,
            "keyOps": v.key_ops,
            "keyUri": f"{origin}/keys/{key.name}",
            "keyUriWithVersion": f"{origin}/keys/{key.name}/{v.version}",
        }
        size = getattr(v.material, "key_size", None)
        if size:
            props["keySize"] = size
        return Response(
            200,
            {
                "id": f"{vault['id']}/keys/{key.name}"
                + (f"/versions/{v.version}" if versioned else ""),
                "name": v.version if versioned else key.name,
                "type": VAULT_KEY_TYPE + ("/versions" if versioned else ""),
                "location": vault["location"],
                "tags": v.tags,
                "properties": props,
            },
        )

    arm_keys = (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}"
        "/keys/{key}"
    )
    add_arm_route(router, arm, "GET", arm_keys, arm_key)
    add_arm_route(router, arm, "GET", arm_keys + "/versions/{version}", arm_key)

    # Before /keys/{name}/{version}, which would take "rotationpolicy" for a version.
    data_route("GET", "/keys/{name}/rotationpolicy", "getrotationpolicy", get_rotation_policy)
    data_route("PUT", "/keys/{name}/rotationpolicy", "setrotationpolicy", set_rotation_policy)
    data_route("POST", "/keys/{name}/create", "create", create_key)
    data_route("GET", "/keys", "list", list_keys)
    data_route("GET", "/keys/{name}/versions", "list", list_versions)
    data_route("POST", "/keys/{name}/rotate", "rotate", rotate_key)
    data_route("PUT", "/keys/{name}", "import", import_key)
    data_route("DELETE", "/keys/{name}", "delete", delete_key)
    data_route("GET", "/keys/{name}", "get", get_key)
    # the SDK sends `/keys/<name>//release` for the latest version
    data_route("POST", "/keys/{name}//release", "release", release_key)
    data_route("POST", "/keys/{name}/{version}/release", "release", release_key)
    data_route("GET", "/keys/{name}/{version}", "get", get_key)
    data_route("PATCH", "/keys/{name}", "update", update_key)
    data_route("PATCH", "/keys/{name}/{version}", "update", update_key)
    for op, func in (
        ("wrapKey", crypto.wrap),
        ("unwrapKey", crypto.unwrap),
        ("encrypt", crypto.wrap),
        ("decrypt", crypto.unwrap),
    ):
        data_route("POST", "/keys/{name}/" + op.lower(), op, crypto_op(op, func))
        data_route("POST", "/keys/{name}/{version}/" + op.lower(), op, crypto_op(op, func))
    data_route("GET", "/deletedkeys/{name}", "get", get_deleted)
    data_route("POST", "/deletedkeys/{name}/recover", "recover", recover_key)
    data_route("DELETE", "/deletedkeys/{name}", "purge", purge_key)
    return caller
