"""Cross-tenant customer-managed keys for a disk encryption set (no Prefect import): the
request, the result, the federated credential that links the service provider's identity to
its multi-tenant app, and the pieces of the chain a check finds missing, each named with its
side. The procedure: "Encrypt managed disks with cross-tenant customer-managed keys"
(https://learn.microsoft.com/azure/virtual-machines/disks-cross-tenant-customer-managed-keys,
steps in the included "Configure cross-tenant customer-managed keys" section)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from byok.disk_encryption_set_models import DiskEncryptionSetInfo
from byok.errors import VerificationFailed
from byok.key_store import KeyInfo, KeyStore
from byok.keyvault_ids import KeyId

# The audience of a federated credential for a managed identity's token ("Use
# api://AzureADTokenExchange as the audience value", the procedure above).
TOKEN_EXCHANGE = "api://AzureADTokenExchange"
# An app other tenants may install (Graph application signInAudience).
MULTI_TENANT = "AzureADMultipleOrgs"
MULTI_TENANT_AUDIENCES = (MULTI_TENANT, "AzureADandPersonalMicrosoftAccount")
# Built-in roles whose data actions cover keys read, wrap and unwrap on an RBAC vault:
# Key Vault Crypto Service Encryption User, Crypto User, Crypto Officer, Administrator
# (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/security).
KEY_USE_ROLES = frozenset(
    {
        "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        "12338af0-0e69-4776-bea7-57ae8d297424",
        "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    }
)
KEY_USE_PERMISSIONS = frozenset({"get", "wrapkey", "unwrapkey"})

Side = Literal["service provider", "customer"]

_PROVIDER_BLOCK = Field(
    None,
    description="Name of the saved 'BYOK Azure Credentials' block of the service provider's "
    "(ISV) tenant (registers the app, makes the identity and the disk encryption set); empty: "
    "the block picked in the flow's `provider_credentials` parameter.",
)
_CUSTOMER_BLOCK = Field(
    None,
    description="Name of the saved 'BYOK Azure Credentials' block of the customer's tenant "
    "(installs the app, makes the vault and key, grants the key); empty: the block picked in "
    "the flow's `customer_credentials` parameter.",
)


class CrossTenantDesRequest(BaseModel):
    """The service provider's set, app and identity; the customer's vault and key."""

    provider_credentials_block: str | None = _PROVIDER_BLOCK
    customer_credentials_block: str | None = _CUSTOMER_BLOCK
    provider_subscription_id: str | None = Field(None, description="Default: the block's.")
    customer_subscription_id: str | None = Field(None, description="Default: the block's.")
    app_name: str = Field(
        ...,
        description="Display name of the service provider's multi-tenant app registration "
        "(found by this name, or registered); customers see it by this name.",
    )
    resource_group: str = Field(
        ..., description="Service provider's resource group of the identity and the set."
    )
    location: str = Field(..., description="Region of the set (the key's vault must be in it).")
    identity_name: str = Field(
        ..., description="Service provider's user-assigned identity, federated to the app."
    )
    des_name: str = Field(..., description="Disk encryption set name.")
    customer_resource_group: str = Field(..., description="Customer's resource group of the vault.")
    vault_name: str = Field(
        ...,
        description="Customer's key vault (created with purge protection if missing, in "
        "`vault_location`; an existing one must be in the customer's tenant).",
    )
    vault_location: str | None = Field(
        None, description="Region of a new vault. Default: `location`."
    )
    vault_rbac: bool = Field(
        True,
        description="A new vault uses Azure RBAC (the app gets Key Vault Crypto Service "
        "Encryption User), else access policies (get, wrapKey, unwrapKey).",
    )
    key_name: str = Field(..., description="Customer's RSA key (created if missing).")
    key_size: Literal[2048, 3072, 4096] = Field(3072, description="RSA key size in bits.")
    mode: Literal["set-up", "check"] = Field(
        "set-up",
        description="set-up: make what is missing on both sides, then check; check: write "
        "nothing and name every missing piece with its side.",
    )
    propagation_timeout_minutes: float = Field(
        15, gt=0, description="How long to wait for new principals and grants to propagate."
    )
    wait_for_other_run: bool = Field(
        False,
        description="When another run is working on the same set: wait for it (true), or fail "
        "at once with `another run is working on <set id>` (false).",
    )
    plan_only: bool = Field(
        False,
        description="Plan only: validate and read both tenants, then report what set-up would "
        "do at each step (would create / exists, unchanged / would update) as the "
        "`<flow>-plan` artifact and the run's result, whatever `mode`; nothing is written.",
    )

    @property
    def key_vault_location(self) -> str:
        """Where a new vault goes."""
        return self.vault_location or self.location


class AppInfo(BaseModel):
    """An app registration: its object id and application (client) id."""

    object_id: str
    app_id: str
    display_name: str


class CrossTenantDesResult(BaseModel):
    """Both sides of a usable cross-tenant set."""

    provider_tenant_id: str
    customer_tenant_id: str
    app: AppInfo
    identity_id: str
    customer_service_principal_id: str
    vault: KeyStore
    key: KeyInfo
    disk_encryption_set: DiskEncryptionSetInfo


class SetFacts(BaseModel):
    """What a check needs of an existing set."""

    id: str
    provisioning_state: str
    federated_client_id: str | None
    identity_ids: list[str]
    key_url: str


class ChainFacts(BaseModel):
    """What the two tenants hold of the chain, as read (None: not found)."""

    provider_tenant_id: str
    customer_tenant_id: str
    app_name: str
    app: AppInfo | None = None
    app_audience: str | None = None
    identity_name: str
    identity_id: str | None = None
    identity_principal_id: str | None = None
    issuer: str
    federated: bool = False
    service_principal_id: str | None = None
    vault_name: str
    vault_found: bool = False
    key_name: str
    key_id: str | None = None  # versionless
    key_access: bool = False
    des_name: str
    des: SetFacts | None = None


class CrossTenantBroken(VerificationFailed):
    """Pieces of the chain are missing; each named with its side and tenant."""

    def __init__(self, des_id: str, missing: list[str]) -> None:
        super().__init__(des_id, "; ".join(missing))
        self.missing = missing

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.resource_id, self.missing)


def issuer(authority_host: str, tenant_id: str) -> str:
    """The token issuer of a tenant's managed identities: `https://login.microsoftonline.com/
    <tenant>/v2.0` in public Azure (the procedure's federated credential)."""
    return f"{authority_host.rstrip('/')}/{tenant_id}/v2.0"


def federated_credential_body(name: str, issuer_url: str, principal_id: str) -> dict[str, Any]:
    """Graph's federatedIdentityCredential letting the identity act as the app."""
    return {
        "name": name,
        "issuer": issuer_url,
        "subject": principal_id,
        "description": "cross-tenant customer-managed key (byok-flows)",
        "audiences": [TOKEN_EXCHANGE],
    }


def federates(credential: dict[str, Any], issuer_url: str, principal_id: str) -> bool:
    """Whether a federated credential lets the identity's tokens act as the app."""
    return (
        str(credential.get("issuer", "")).rstrip("/").lower() == issuer_url.rstrip("/").lower()
        and credential.get("subject") == principal_id
        and TOKEN_EXCHANGE in (credential.get("audiences") or [])
    )


def missing_pieces(facts: ChainFacts) -> list[str]:
    """Every piece of the chain the facts lack, the service provider's first, each as
    `<side> tenant '<id>': <what is missing>`."""
    provider = f"service provider tenant '{facts.provider_tenant_id}'"
    customer = f"customer tenant '{facts.customer_tenant_id}'"
    app = f"app '{facts.app_name}' ({facts.app.app_id})" if facts.app else f"app '{facts.app_name}'"
    found: list[str] = []
    if facts.app is None:
        found.append(f"{provider}: no app registration named '{facts.app_name}'")
    elif facts.app_audience not in MULTI_TENANT_AUDIENCES:
        found.append(
            f"{provider}: {app} is single-tenant (signInAudience {facts.app_audience}); "
            f"other tenants install only {MULTI_TENANT} apps"
        )
    if facts.identity_principal_id is None:
        found.append(f"{provider}: no user-assigned identity '{facts.identity_name}'")
    elif facts.app is not None and not facts.federated:
        found.append(
            f"{provider}: {app} has no federated credential for identity "
            f"'{facts.identity_name}' (issuer {facts.issuer}, subject "
            f"{facts.identity_principal_id}, audience {TOKEN_EXCHANGE})"
        )
    if facts.app is not None and facts.service_principal_id is None:
        found.append(f"{customer}: {app} is not installed (no service principal)")
    if not facts.vault_found:
        found.append(f"{customer}: no key vault '{facts.vault_name}'")
    elif facts.key_id is None:
        found.append(f"{customer}: no key '{facts.key_name}' in vault '{facts.vault_name}'")
    if facts.service_principal_id is not None and facts.vault_found and not facts.key_access:
        found.append(
            f"{customer}: service principal {facts.service_principal_id} of {app} has no key "
            f"access on vault '{facts.vault_name}' (get, wrapKey, unwrapKey, or Key Vault "
            "Crypto Service Encryption User)"
        )
    found.extend(_set_pieces(facts, provider, app))
    return found


def _set_pieces(facts: ChainFacts, provider: str, app: str) -> list[str]:
    des = facts.des
    if des is None:
        return [f"{provider}: no disk encryption set '{facts.des_name}'"]
    found = []
    if des.provisioning_state != "Succeeded":
        found.append(
            f"{provider}: disk encryption set '{facts.des_name}' is {des.provisioning_state}"
        )
    if facts.app is not None and des.federated_client_id != facts.app.app_id:
        found.append(
            f"{provider}: disk encryption set '{facts.des_name}' has federatedClientId "
            f"{des.federated_client_id}, not {app}"
        )
    wanted = (facts.identity_id or "").lower()
    if facts.identity_id and wanted not in (i.lower() for i in des.identity_ids):
        found.append(
            f"{provider}: disk encryption set '{facts.des_name}' does not use identity "
            f"'{facts.identity_name}'"
        )
    if facts.key_id and KeyId.parse(des.key_url).versionless.lower() != facts.key_id.lower():
        found.append(
            f"{provider}: disk encryption set '{facts.des_name}' uses {des.key_url}, not key "
            f"'{facts.key_name}' of vault '{facts.vault_name}'"
        )
    return found
