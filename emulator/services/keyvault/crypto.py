"""Key material for the Key Vault emulator: generation, JWK conversion, wrap and unwrap."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from emulator.http import HttpError


@dataclass(frozen=True)
class SymmetricKey:
    """An AES key (oct-HSM, managed HSMs only); its bytes never leave the emulator."""

    secret: bytes

    @property
    def bits(self) -> int:
        """The key size in bits."""
        return len(self.secret) * 8


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | SymmetricKey
AES_SIZES = (128, 192, 256)
RSA_SIZES = (2048, 3072, 4096)
CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}
_CURVE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66, "P-256K": 32}


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWK and Key Vault use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise HttpError(400, "BadParameter", f"Invalid base64url value: {exc}") from exc


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def generate(kty: str, key_size: int | None, curve: str | None) -> PrivateKey:
    """A new key of the requested type (HSM types are emulated in software)."""
    if kty in ("RSA", "RSA-HSM"):
        size = key_size or 2048
        if size not in RSA_SIZES:
            raise HttpError(
                400,
                "BadParameter",
                f"Invalid key size {size}; RSA keys are 2048, 3072 or 4096 bits.",
            )
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    if kty in ("EC", "EC-HSM"):
        crv = curve or "P-256"
        if crv not in CURVES:
            raise HttpError(400, "BadParameter", f"Invalid curve {crv!r}.")
        return ec.generate_private_key(CURVES[crv])
    if kty == "oct-HSM":
        size = key_size or 256
        if size not in AES_SIZES:
            raise HttpError(
                400, "BadParameter", f"Invalid key size {size}; oct keys are 128, 192 or 256 bits."
            )
        return SymmetricKey(secrets.token_bytes(size // 8))
    raise HttpError(400, "BadParameter", f"The key type {kty!r} is not supported.")


def generate_like(material: PrivateKey, kty: str) -> PrivateKey:
    """A new key of the same type and size or curve (a rotation)."""
    if isinstance(material, rsa.RSAPrivateKey):
        return generate(kty, material.key_size, None)
    if isinstance(material, SymmetricKey):
        return generate(kty, material.bits, None)
    curve = next(name for name, c in CURVES.items() if c.name == material.curve.name)
    return generate(kty, None, curve)


def from_jwk(jwk: dict[str, Any]) -> PrivateKey:
    """Import a private JWK (RSA with n, e, d, p, q…; EC with crv, x, y, d)."""
    kty = jwk.get("kty", "")

    def num(name: str) -> int:
        if not jwk.get(name):
            raise HttpError(400, "BadParameter", f"The imported {kty} key lacks '{name}'.")
        return int.from_bytes(unb64url(jwk[name]), "big")

    if kty in ("RSA", "RSA-HSM"):
        n, e, d, p, q = num("n"), num("e"), num("d"), num("p"), num("q")
        public = rsa.RSAPublicNumbers(e, n)
        dp = rsa.rsa_crt_dmp1(d, p) if not jwk.get("dp") else num("dp")
        dq = rsa.rsa_crt_dmq1(d, q) if not jwk.get("dq") else num("dq")
        qi = rsa.rsa_crt_iqmp(p, q) if not jwk.get("qi") else num("qi")
        key = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, public).private_key()
        if key.key_size not in RSA_SIZES:
            raise HttpError(
                400,
                "BadParameter",
                f"Invalid key size {key.key_size}; RSA keys are 2048, 3072 or 4096.",
            )
        return key
    if kty in ("EC", "EC-HSM"):
        crv = jwk.get("crv", "")
        if crv not in CURVES:
            raise HttpError(400, "BadParameter", f"Invalid curve {crv!r}.")
        public_ec = ec.EllipticCurvePublicNumbers(num("x"), num("y"), CURVES[crv])
        return ec.EllipticCurvePrivateNumbers(num("d"), public_ec).private_key()
    raise HttpError(400, "BadParameter", f"The key type {kty!r} is not supported.")


def public_jwk(key: PrivateKey, kty: str) -> dict[str, Any]:
    """The public part as a JWK (nothing but the type for a symmetric key)."""
    if isinstance(key, SymmetricKey):
        return {"kty": kty}
    if isinstance(key, rsa.RSAPrivateKey):
        pub = key.public_key().public_numbers()
        return {"kty": kty, "n": b64url(_int_bytes(pub.n)), "e": b64url(_int_bytes(pub.e))}
    numbers = key.public_key().public_numbers()
    crv = next(name for name, c in CURVES.items() if c.name == key.curve.name)
    size = _CURVE_BYTES[crv]
    return {
        "kty": kty,
        "crv": crv,
        "x": b64url(_int_bytes(numbers.x, size)),
        "y": b64url(_int_bytes(numbers.y, size)),
    }


_OAEP = {
    "RSA-OAEP": lambda: padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),
    "RSA-OAEP-256": lambda: padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
    "RSA1_5": padding.PKCS1v15,
}


def _padding(key: PrivateKey, alg: str, operation: str) -> padding.AsymmetricPadding:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise HttpError(
            400, "BadParameter", f"The operation '{operation}' is not supported by EC keys."
        )
    if alg not in _OAEP:
        raise HttpError(
            400,
            "BadParameter",
            f"Invalid algorithm {alg!r} for {operation}; use RSA-OAEP, RSA-OAEP-256 or RSA1_5.",
        )
    return _OAEP[alg]()


def _aes_kw(key: PrivateKey, alg: str, operation: str) -> SymmetricKey | None:
    """The AES key for an A128KW/A192KW/A256KW operation (None for asymmetric keys)."""
    if not isinstance(key, SymmetricKey):
        return None
    if alg != f"A{key.bits}KW":
        raise HttpError(
            400, "BadParameter", f"Invalid algorithm {alg!r} for {operation}; use A{key.bits}KW."
        )
    return key


def wrap(key: PrivateKey, alg: str, plaintext: bytes, operation: str = "wrapKey") -> bytes:
    """RSA encryption of a symmetric key (wrapKey, encrypt), or AES key wrap (RFC 3394)."""
    aes = _aes_kw(key, alg, operation)
    if aes is not None:
        return keywrap.aes_key_wrap(aes.secret, plaintext)
    pad = _padding(key, alg, operation)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key().encrypt(plaintext, pad)


def unwrap(key: PrivateKey, alg: str, ciphertext: bytes, operation: str = "unwrapKey") -> bytes:
    """RSA decryption (unwrapKey, decrypt) or AES key unwrap; wrong key or data is a 400."""
    aes = _aes_kw(key, alg, operation)
    if aes is not None:
        try:
            return keywrap.aes_key_unwrap(aes.secret, ciphertext)
        except keywrap.InvalidUnwrap as exc:
            raise HttpError(400, "BadParameter", "Unable to unwrap the specified value.") from exc
    pad = _padding(key, alg, operation)
    assert isinstance(key, rsa.RSAPrivateKey)
    try:
        return key.decrypt(ciphertext, pad)
    except ValueError as exc:
        raise HttpError(400, "BadParameter", "Unable to decrypt the specified value.") from exc
