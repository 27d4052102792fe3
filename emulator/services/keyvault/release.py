"""Secure key release: `POST {vault}/keys/{name}/{version}/release` hands an exportable key
to a target whose attestation token satisfies the key's release policy. The caller needs the
release permission (access policy `release`, Azure RBAC `…/vaults/keys/release/action`, on a
managed HSM the local `…/managedHsm/keys/release/action`: checked as every data operation
is); "The target key must be marked exportable"
(https://learn.microsoft.com/rest/api/keyvault/keys/release/release).

The policy (https://learn.microsoft.com/azure/key-vault/keys/policy-grammar): `anyOf` groups,
each naming an `authority` (the token's issuer) and `allOf`/`anyOf` conditions on claims
(`equals`; a dotted claim name reaches into nested claims, as
`x-ms-isolation-tee.x-ms-attestation-type`). The emulator reads the token's claims without
verifying its signature (it has no attestation service) and answers a release result without
key material (what it would wrap for the target is not modelled)."""

from __future__ import annotations

import json
from typing import Any

from emulator.http import HttpError
from emulator.services.keyvault import crypto


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT (its payload), unverified; 400 when it is not one."""
    parts = (token or "").split(".")
    try:
        claims = json.loads(crypto.unb64url(parts[1])) if len(parts) == 3 else None
    except ValueError:
        claims = None
    if not isinstance(claims, dict):
        raise HttpError(400, "BadParameter", "target: not an attestation token (a JWT).")
    return claims


def _claim(claims: dict[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _holds(rule: dict[str, Any], claims: dict[str, Any]) -> bool:
    """A condition (`claim` and `equals`) or a nested `allOf`/`anyOf` of them."""
    if "allOf" in rule:
        return all(_holds(r, claims) for r in rule["allOf"])
    if "anyOf" in rule:
        return any(_holds(r, claims) for r in rule["anyOf"])
    return "claim" in rule and _claim(claims, rule["claim"]) == rule.get("equals")


def satisfies(policy: dict[str, Any], claims: dict[str, Any]) -> bool:
    """Whether a token's claims meet one of the policy's authority groups: issued by its
    authority, and its conditions hold."""
    issuer = str(claims.get("iss") or "").rstrip("/").lower()
    return any(
        str(group.get("authority") or "").rstrip("/").lower() == issuer
        and _holds({k: v for k, v in group.items() if k != "authority"}, claims)
        for group in policy.get("anyOf") or []
    )


def check_release(release_policy: dict[str, Any] | None, exportable: bool, target: str) -> None:
    """400 for a key that is not exportable or a target that is no token; 403 when the
    token does not satisfy the key's release policy."""
    if not exportable or not release_policy:
        raise HttpError(400, "BadParameter", "The key is not exportable: it cannot be released.")
    claims = claims_of(target)
    policy = json.loads(crypto.unb64url(str(release_policy.get("data") or "")))
    if not satisfies(policy, claims):
        raise HttpError(
            403,
            "Forbidden",
            "The target's attestation token does not satisfy the key's release policy "
            f"(issuer {claims.get('iss')}).",
            inner="ReleasePolicyNotSatisfied",
        )


def release_result(kid: str, claims: dict[str, Any]) -> str:
    """The `value` of a release answer: a compact JWS naming the released key version and
    the target (unsigned: the emulator signs nothing)."""
    header = {"alg": "none", "kid": kid}
    payload = {"request": {"target_issuer": claims.get("iss")}, "response": {"key": {"kid": kid}}}
    return ".".join(crypto.b64url(json.dumps(p).encode()) for p in (header, payload)) + "."
