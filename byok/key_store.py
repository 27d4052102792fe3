"""Where a customer key lives (no Prefect import): the key store a flow's key is in, the key,
and what a service's identity needs to use it.

Today the one store is a Key Vault vault. The flows only handle `KeyStore` and `KeyInfo` and
call the store steps of `tasks/key_vault.py` (ensure key, new version, grant, revoke, find the
store of a key id); a second store (Managed HSM) becomes another member of `KeyStore`, tagged
by `kind`, with its own branch in those steps, and no flow changes."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel

from byok.keyvault_ids import KeyId

# Built-in role ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles)
CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
# What this tool needs on keys of the vaults it manages.
OPERATOR_KEY_PERMISSIONS = [
    "get",
    "list",
    "create",
    "update",
    "import",
    "rotate",
    "delete",
    "recover",
    "getrotationpolicy",
    "setrotationpolicy",
]
# What a service's identity (disk encryption set, registry) needs on the key.
SERVICE_KEY_PERMISSIONS = ["get", "wrapKey", "unwrapKey"]


class VaultInfo(BaseModel):
    """A key vault as the steps after it need it."""

    # The store's kind; a class constant, so results keep their shape (a second kind makes it
    # the field that tags the union).
    kind: ClassVar[Literal["key-vault"]] = "key-vault"
    id: str
    name: str
    url: str
    location: str
    rbac: bool


# The stores a customer key can live in (a tagged union once a second kind exists).
KeyStore = VaultInfo


class KeyInfo(BaseModel):
    """A key: its versioned and versionless ids."""

    id: str
    versionless_id: str
    name: str
    version: str
    size: int


def key_reference(versioned_key_id: str, follow_latest: bool) -> str:
    """The key id a set or registry is given: versionless to follow new versions by itself,
    else the versioned id."""
    kid = KeyId.parse(versioned_key_id)
    return kid.versionless if follow_latest else kid.versioned
