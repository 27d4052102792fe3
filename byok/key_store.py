"""Where a customer key lives (no Prefect import): the key store a flow's key is in, the key,
and what a service's identity needs to use it.

A store is a Key Vault vault or a Managed HSM: `KeyStore`, a union tagged by `kind` (a
vault's results carry no `kind`, as before HSMs, and read as vaults). The flows only handle
`KeyStore` and `KeyInfo` and call the store steps of `tasks/key_vault.py` (ensure key, new
version, grant, revoke, find the store of a key id), which branch on the kind."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Discriminator, Tag

from byok.keyvault_ids import KeyId

# Built-in role ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles)
CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
# Managed HSM local RBAC roles
# (https://learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles): what a service's
# identity needs on its key, and what the operator needs (granted by the HSM's administrators).
HSM_CRYPTO_SERVICE_ENCRYPTION_USER = "33413926-3206-4cdd-b39a-83574fe37a17"
HSM_CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
HSM_ROLE_DEFINITION = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
HSM_KEY_CREATORS = frozenset({HSM_CRYPTO_USER})
# Administrator, Crypto Officer, Policy Administrator: roleAssignments/write/action.
HSM_ROLE_ASSIGNERS = frozenset(
    {
        "a290e904-7015-4bba-90c8-60543313cdb4",
        "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
        "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
    }
)
# The HSM role standing for a vault role the steps are asked to grant.
HSM_ROLE_OF = {CRYPTO_SERVICE_ENCRYPTION_USER: HSM_CRYPTO_SERVICE_ENCRYPTION_USER}
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

    # A class constant: results keep the shape they had before HSMs (no `kind` in them).
    kind: ClassVar[Literal["key-vault"]] = "key-vault"
    id: str
    name: str
    url: str
    location: str
    rbac: bool


class HsmInfo(BaseModel):
    """A managed HSM (activated) as the steps after it need it: keys are granted through its
    local RBAC, at key scope. Its `kind` is saved with it (it tags the union)."""

    kind: Literal["managed-hsm"] = "managed-hsm"
    id: str
    name: str
    url: str
    location: str
    # The key the store was found or chosen for: grants without a key name are scoped to it.
    key_name: str | None = None


def _store_kind(value: Any) -> str:
    """The tag of a store; a store without one (saved before HSMs) is a vault."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return str(kind or "key-vault")


# The stores a customer key can live in.
KeyStore = Annotated[
    Annotated[VaultInfo, Tag("key-vault")] | Annotated[HsmInfo, Tag("managed-hsm")],
    Discriminator(_store_kind),
]


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
