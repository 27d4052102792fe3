"""KMS etcd encryption of AKS clusters: the rules of a request (checked before any write),
the cluster tags that record the key versions in use, and which Secrets still need the
previous key version.

Two experiences (AzureKeyVaultKms.keyId, API 2026-07-01 and later): `legacy` takes a
versioned key id and is rotated by hand (new version, cluster updated, every Secret
re-written: https://learn.microsoft.com/azure/aks/use-kms-etcd-encryption#rotate-the-existing-keys);
`new` takes a versionless key id and picks new versions up itself, Kubernetes 1.33 or newer
(https://learn.microsoft.com/azure/aks/kms-data-encryption).

The plugin holds two key slots; a Secret still sealed with the previous version when a second
rotation happens leaves the cluster stuck (Azure/AKS#4648) and nobody can see which key the
previous slot holds (Azure/AKS#4926). So the tool records it: cluster tags name the current
and previous versions and when the rotation happened, and each Secret the tool re-writes is
annotated with the version it was re-written under (the write itself is what re-encrypts it).
A Secret needs the previous version when it carries no annotation for the current version and
existed before the rotation."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from byok.errors import InvalidRequest
from byok.keyvault_ids import KeyId
from byok.outcomes import PLAN_ONLY, Change, changes
from byok.parameters import AZURE_BLOCK_NAME

Experience = Literal["legacy", "new"]
NetworkAccess = Literal["Public", "Private"]
NEW_EXPERIENCE_KUBERNETES = (1, 33)
ANNOTATION = "byok.azure.com/kms-key-version"
TAG_CURRENT = "byok-kms-key-version"
TAG_PREVIOUS = "byok-kms-previous-key-version"
TAG_ROTATED_AT = "byok-kms-rotated-at"
TAG_ROTATION = "byok-kms-rotation"
KMS_KEY_PERMISSIONS = ["encrypt", "decrypt"]
KEY_VAULT_CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
# A private vault: AKS makes a private endpoint into it and approves it as the cluster's
# identity, which needs Key Vault Contributor on the vault (its `Microsoft.KeyVault/*` holds
# `vaults/privateEndpointConnectionsApproval/action`): "Assign the Key Vault Contributor role
# for the identity" (https://learn.microsoft.com/azure/aks/use-kms-etcd-encryption, private
# key vault; Azure/telescope#1121). Owner and Contributor hold the action too.
KEY_VAULT_CONTRIBUTOR = "f25e0fa2-a7c8-4377-a976-54943a77a395"
PRIVATE_ENDPOINT_ROLES = frozenset(
    {
        KEY_VAULT_CONTRIBUTOR,
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
        "b24988ac-6180-42a0-ab88-20f7382d9c72",  # Contributor
    }
)
APPROVE_PRIVATE_ENDPOINT = "Microsoft.KeyVault/vaults/privateEndpointConnectionsApproval/action"


# AKS KMS takes Azure Key Vault keys only: `azureKeyVaultKms.keyId` is the "Identifier of
# Azure Key Vault key" and `keyVaultResourceId` the "Resource ID of key vault" (AKS REST spec,
# ManagedClusterSecurityProfile AzureKeyVaultKms), and "Add Key Management Service (KMS) etcd
# encryption to an AKS cluster" (https://learn.microsoft.com/azure/aks/use-kms-etcd-encryption)
# sets it up on a key vault only (access policy or Key Vault Crypto User); no Managed HSM.
KMS_KEY_STORE_RULE = (
    "AKS KMS etcd encryption takes a key of an Azure Key Vault vault; this key is in a "
    "managed HSM, which AKS KMS does not support (AKS REST spec azureKeyVaultKms.keyId: "
    "'Identifier of Azure Key Vault key'; learn.microsoft.com/azure/aks/use-kms-etcd-encryption)"
)


def parse_key_id(field: str, key_id: str) -> KeyId:
    """A Key Vault key id, or InvalidRequest."""
    try:
        return KeyId.parse(key_id)
    except ValueError as exc:
        raise InvalidRequest(field, key_id, str(exc)) from None


def check_experience(field: str, key_id: str, experience: Experience) -> KeyId:
    """`legacy` needs a versioned key id, `new` a versionless one."""
    kid = parse_key_id(field, key_id)
    if experience == "legacy" and not kid.version:
        raise InvalidRequest(
            field,
            key_id,
            "the legacy KMS experience needs a versioned key id (…/keys/<name>/<version>); "
            "a versionless id selects the new experience",
        )
    if experience == "new" and kid.version:
        raise InvalidRequest(
            field,
            key_id,
            "the new KMS experience needs a versionless key id (…/keys/<name>): "
            f"use {kid.versionless}",
        )
    return kid


def check_kubernetes(field: str, version: str, experience: Experience) -> None:
    """The new experience needs Kubernetes 1.33 or newer."""
    match = re.match(r"^(\d+)\.(\d+)", version)
    minor = (int(match[1]), int(match[2])) if match else (0, 0)
    if experience == "new" and minor < NEW_EXPERIENCE_KUBERNETES:
        raise InvalidRequest(
            field, version, "the new KMS experience needs Kubernetes 1.33 or newer"
        )


def check_key_type(field: str, key_id: str, kty: str) -> None:
    """KMS encrypts with RSA keys only."""
    if not kty.upper().startswith("RSA"):
        raise InvalidRequest(field, key_id, f"is a {kty} key; KMS needs an RSA key")


def check_network(access: NetworkAccess, vault_resource_id: str | None) -> None:
    """A private vault needs its resource id; a public one takes none. Refused, not derived
    from the key, as `az aks update` refuses it ("--azure-keyvault-kms-key-vault-resource-id
    can not be empty if ... is Private", azure-cli acs/managed_cluster_decorator.py) and AKS
    ("KeyVault resource ID is empty when KeyVault network access is Private.",
    Azure/telescope#1121): the id names the vault AKS links privately, checked against the
    key's vault."""
    if access == "Private" and not vault_resource_id:
        raise InvalidRequest(
            "key_vault_resource_id",
            vault_resource_id,
            "a private key vault (key_vault_network_access = Private) needs its resource id",
        )
    if access == "Public" and vault_resource_id:
        raise InvalidRequest(
            "key_vault_resource_id",
            vault_resource_id,
            "only for key_vault_network_access = Private: leave it empty for a public vault",
        )


def experience_of(key_id: str) -> Experience:
    """A versioned key id is the legacy experience, a versionless one the new."""
    return "legacy" if KeyId.parse(key_id).version else "new"


def rotated_kms(kms: dict[str, Any], new_version: str) -> dict[str, Any]:
    """The cluster's KMS settings after a rotation to `new_version`: the legacy experience
    names the version, the new one keeps its versionless key id."""
    return {**kms, "keyId": new_version} if experience_of(kms["keyId"]) == "legacy" else kms


def needs_rewrite(secret: dict[str, Any], current: str, rotated_at: datetime | None) -> bool:
    """Whether a Secret (its metadata as the API returns it) may still be sealed with a key
    version older than `current`."""
    meta = secret.get("metadata") or {}
    if (meta.get("annotations") or {}).get(ANNOTATION) == current:
        return False
    created = meta.get("creationTimestamp")
    if rotated_at is None or created is None:
        return True
    when = created if isinstance(created, datetime) else datetime.fromisoformat(str(created))
    # Both at whole seconds (Kubernetes timestamps and the tag are): a Secret made in the
    # second of the rotation counts as made before it.
    return when.replace(microsecond=0) <= rotated_at


def kms_of(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """A cluster's (as JSON) enabled `azureKeyVaultKms`, or None."""
    props = cluster.get("properties") or {}
    kms = (props.get("securityProfile") or {}).get("azureKeyVaultKms")
    return kms if kms and kms.get("enabled") else None


def kms_changes(
    cluster: dict[str, Any], identity_id: str | None, kms: dict[str, Any], version: str
) -> list[Change]:
    """What setting the cluster's (as JSON) KMS key changes: its identity (`identity_id`;
    None: kept), each `azureKeyVaultKms` field, and the tag recording the key version."""
    have = kms_of(cluster) or {}
    users = list((cluster.get("identity") or {}).get("userAssignedIdentities") or {})
    wanted: dict[str, Any] = {f"azureKeyVaultKms.{k}": v for k, v in kms.items()}
    current: dict[str, Any] = {f"azureKeyVaultKms.{k}": have.get(k) for k in kms}
    if identity_id is not None:
        same = [u for u in users if u.lower() == identity_id.lower()]
        wanted["identity"], current["identity"] = identity_id, (same or users or [None])[0]
    wanted[f"tags.{TAG_CURRENT}"] = version
    current[f"tags.{TAG_CURRENT}"] = (cluster.get("tags") or {}).get(TAG_CURRENT)
    return changes(current, wanted)


def next_tags(
    tags: dict[str, str], version: str, rotation: str | None, now: datetime
) -> dict[str, str]:
    """The cluster's tags once `version` is its key version: unchanged if it already is;
    else the old version becomes the previous one, and the time (`now`) and rotation are
    recorded."""
    if tags.get(TAG_CURRENT) == version:
        return tags
    at = now.isoformat(timespec="seconds")
    changed = {**tags, TAG_CURRENT: version, TAG_ROTATED_AT: at}
    if tags.get(TAG_CURRENT):
        changed[TAG_PREVIOUS] = tags[TAG_CURRENT]
    if rotation:
        changed[TAG_ROTATION] = rotation
    return changed


def rotated_at(tags: dict[str, str]) -> datetime | None:
    """When the cluster's key version last changed, as its tag records it."""
    value = tags.get(TAG_ROTATED_AT)
    return datetime.fromisoformat(value) if value else None


def annotated(secret: dict[str, Any], version: str) -> dict[str, Any]:
    """The Secret with the re-encryption annotation for `version` (a change: the write
    happens, sealed with the current key)."""
    meta = dict(secret.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION: version}
    return {**secret, "metadata": meta}


_BLOCK = Field(None, description=AZURE_BLOCK_NAME)
_WAIT = Field(
    False,
    description="When another run is working on this cluster: wait for it (default: fail at once).",
)
_PAGE = Field(100, ge=1, le=500, description="Secrets per list page (`limit`).")
_PACE = Field(50.0, gt=0, le=1000, description="Secret re-writes per second at most.")


class EnableKmsRequest(BaseModel):
    """KMS etcd encryption of an existing cluster with a Key Vault key."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the cluster.")
    cluster_name: str = Field(..., description="The cluster.")
    key_id: str = Field(
        ...,
        description="Key Vault key id: versioned for the legacy experience, versionless for "
        "the new one.",
    )
    experience: Experience = Field(
        "legacy",
        description="legacy: versioned key, rotated by rotate-aks-kms-key; new: versionless "
        "key, new versions picked up by AKS (Kubernetes 1.33+).",
    )
    identity_name: str = Field(
        "aks-kms",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$",
        description="User-assigned identity of the control plane (in the cluster's group; "
        "created if missing).",
    )
    grant_key_access: bool = Field(
        True,
        description="Grant the identity Key Vault Crypto User (RBAC vaults) or encrypt/decrypt "
        "(access policies); off: it must have them already.",
    )
    key_vault_network_access: NetworkAccess = Field(
        "Public",
        description="Public, or Private for a vault without public network access (the "
        "identity then also gets Key Vault Contributor on it).",
    )
    key_vault_resource_id: str | None = Field(
        None, description="The vault's resource id (a Private vault only, and required there)."
    )
    create_if_missing: bool = Field(
        False,
        description="When the cluster does not exist: create it with KMS on from the start "
        "(in the key vault's region); off: refuse.",
    )
    kubernetes_version: str = Field(
        "1.33", pattern=r"^\d+\.\d+(\.\d+)?$", description="A new cluster's Kubernetes version."
    )
    node_count: int = Field(1, ge=1, le=100, description="A new cluster's system pool nodes.")
    secrets_page_size: int = _PAGE
    secrets_per_second: float = _PACE
    propagation_timeout_minutes: float = Field(
        15, gt=0, description="How long to wait for the identity's key access to propagate."
    )
    wait_for_other_run: bool = _WAIT
    plan_only: bool = PLAN_ONLY

    def kms_profile(self) -> dict[str, Any]:
        """The cluster's `securityProfile.azureKeyVaultKms`."""
        kms: dict[str, Any] = {
            "enabled": True,
            "keyId": self.key_id,
            "keyVaultNetworkAccess": self.key_vault_network_access,
        }
        if self.key_vault_resource_id:
            kms["keyVaultResourceId"] = self.key_vault_resource_id
        return kms

    def new_cluster(self, location: str) -> dict[str, Any] | None:
        """The body of the cluster if it is missing (the identity, KMS settings and tags are
        added by the write); None when it must exist."""
        if not self.create_if_missing:
            return None
        return {
            "location": location,
            "properties": {
                "kubernetesVersion": self.kubernetes_version,
                "dnsPrefix": self.cluster_name,
                "agentPoolProfiles": [
                    {"name": "system", "mode": "System", "count": self.node_count}
                ],
            },
        }


class RotateKmsRequest(BaseModel):
    """A new version of a cluster's KMS key, and every Secret re-encrypted with it."""

    azure_credentials_block: str | None = _BLOCK
    subscription_id: str | None = Field(None, description="Default: the block's.")
    resource_group: str = Field(..., description="Resource group of the cluster.")
    cluster_name: str = Field(..., description="The cluster.")
    rotation_id: str | None = Field(
        None,
        max_length=64,
        description="Names this rotation; re-run with the same id to finish it (default: the "
        "run's id).",
    )
    secrets_page_size: int = _PAGE
    secrets_per_second: float = _PACE
    wait_for_other_run: bool = _WAIT
    plan_only: bool = PLAN_ONLY


class KmsState(BaseModel):
    """A cluster's KMS key as the run left it."""

    cluster_id: str
    experience: Experience
    key_id: str  # as the cluster has it
    key_version: str  # the versioned id Secrets are sealed with now
    previous_key_version: str | None
    rotation_id: str | None = None
    secrets_rewritten: int = 0
