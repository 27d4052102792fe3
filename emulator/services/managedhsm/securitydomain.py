"""The security domain download that activates a new Managed HSM: at least 3 (at most 10)
RSA public keys in JWK form with their certificate chain, and a quorum of 2 up to their
number; the answer is the security domain wrapped for those keys
(https://github.com/Azure/azure-rest-api-specs/blob/main/specification/keyvault/data-plane/
Microsoft.KeyVault/preview/7.2-preview/securitydomain.json, CertificateInfoObject).

The emulated domain is a random 32-byte secret split with a quorum-of-N Shamir scheme over a
prime field, one share per certificate, each share RSA-OAEP-256-wrapped for its key: what a
holder of `required` private keys could rebuild."""

from __future__ import annotations

import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emulator.http import HttpError
from emulator.services.keyvault import crypto

_PRIME = 2**521 - 1  # a Mersenne prime above any 32-byte secret
_REQUIRED_JWK = ("kty", "key_ops", "alg", "kid", "x5c", "x5t#S256", "n", "e")


def _bad(message: str) -> HttpError:
    return HttpError(400, "BadParameter", message)


def _public_keys(body: dict[str, Any]) -> tuple[list[tuple[dict[str, Any], rsa.RSAPublicKey]], int]:
    """The certificates' public keys and the quorum, or 400 naming what is wrong."""
    certificates = body.get("certificates")
    if not isinstance(certificates, list) or not 3 <= len(certificates) <= 10:
        raise _bad("certificates: the security domain needs 3 to 10 certificates.")
    required = body.get("required", 2)
    if not isinstance(required, int) or not 2 <= required <= len(certificates):
        raise _bad(f"required = {required}: the quorum must be 2 to {len(certificates)}.")
    keys = []
    for i, item in enumerate(certificates):
        jwk = (item or {}).get("value") or {}
        missing = [name for name in _REQUIRED_JWK if not jwk.get(name)]
        if missing or jwk.get("kty") != "RSA":
            raise _bad(
                f"certificates[{i}].value: an RSA JWK with {', '.join(_REQUIRED_JWK)} is "
                f"required (missing: {', '.join(missing) or 'kty RSA'})."
            )
        n = int.from_bytes(crypto.unb64url(jwk["n"]), "big")
        e = int.from_bytes(crypto.unb64url(jwk["e"]), "big")
        keys.append((jwk, rsa.RSAPublicNumbers(e, n).public_key()))
    if len({jwk["x5t#S256"] for jwk, _ in keys}) != len(keys):
        raise _bad("certificates: each certificate must be different.")
    return keys, required


def _shares(secret: int, required: int, count: int) -> list[int]:
    """Shamir shares f(1)…f(count) of a random polynomial of degree required-1, f(0)=secret."""
    coefficients = [secret] + [secrets.randbelow(_PRIME) for _ in range(required - 1)]
    return [
        sum(c * pow(x, power, _PRIME) for power, c in enumerate(coefficients)) % _PRIME
        for x in range(1, count + 1)
    ]


def download(body: dict[str, Any]) -> str:
    """The security domain for a download request (base64url JSON), or 400."""
    keys, required = _public_keys(body)
    secret = int.from_bytes(secrets.token_bytes(32), "big")
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    shares = [
        {
            "x": x,
            "kid": jwk["kid"],
            "x5t#S256": jwk["x5t#S256"],
            "enc_share": crypto.b64url(key.encrypt(share.to_bytes(66, "big"), oaep)),
        }
        for x, ((jwk, key), share) in enumerate(
            zip(keys, _shares(secret, required, len(keys)), strict=True), start=1
        )
    ]
    domain = {"version": "1.0", "required": required, "shares": shares}
    return crypto.b64url(json.dumps(domain).encode())
