"""`securityProfile.azureKeyVaultKms` of managed clusters: KMS etcd encryption with a Key
Vault key (AzureKeyVaultKms in the 2026-08-01 API: `enabled`, `keyId`, `keyVaultNetworkAccess`
Public|Private, `keyVaultResourceId` required for Private and empty for Public; "Starting with
API versions 2026-07-01 and 2026-07-02-preview, a versioned key identifier uses the legacy KMS
experience, while an unversioned key identifier uses the new KMS experience":
azure-mgmt-containerservice 41.8 models.AzureKeyVaultKms, from azure-rest-api-specs
specification/containerservice/resource-manager/Microsoft.ContainerService/aks). The new
experience needs Kubernetes 1.33 (https://learn.microsoft.com/azure/aks/kms-data-encryption).

Rules: the control plane identity must be able to encrypt and decrypt with the key
(`AzureKeyVaultKmsValidateIdentityPermissionCustomerError`, MicrosoftDocs/azure-docs#98954);
a changed key version while Secrets are still sealed with the previous slot's key leaves the
cluster stuck Updating (Azure/kubernetes-kms#291, tracked as Azure/AKS#4648); a private vault
needs its resource id (AKS: "KeyVault resource ID is empty when KeyVault network access is
Private.", Azure/telescope#1121) and the identity must approve the private endpoint AKS makes
into the vault (`…/privateEndpointConnectionsApproval/action`, which Key Vault Contributor
grants: https://learn.microsoft.com/azure/aks/use-kms-etcd-encryption#private-key-vault; AKS
does not document its refusal: the emulator answers ARM's AuthorizationFailed); a key that is
disabled, expired or no longer usable by the identity puts the cluster in Failed with the
cause in `status.provisioningError` (the plugin holds two key slots, either can fail the
cluster: Azure/AKS#4926)."""

from __future__ import annotations

import re
from typing import Any

from emulator.http import HttpError
from emulator.services.arm.models import PutContext
from emulator.services.authorization.models import principal_allowed
from emulator.services.kubernetes.kms import (
    ACCESS_ERROR,
    Caller,
    KmsProvider,
    plugin_caller,
    settings,
)
from emulator.services.kubernetes.models import KubernetesModel

FIELD = "properties.securityProfile.azureKeyVaultKms"
VERSIONLESS_SINCE = "2026-07-01"
VERSIONLESS_KUBERNETES = (1, 33)
APPROVE_PRIVATE_ENDPOINT = "Microsoft.KeyVault/vaults/privateEndpointConnectionsApproval/action"


def _bad(message: str, code: str = "InvalidParameter") -> HttpError:
    return HttpError(400, code, message)


def effective_kms(ctx: PutContext) -> dict[str, Any] | None:
    """The KMS settings the cluster will have after this write."""
    props = ctx.body.get("properties") or {}
    old = (ctx.existing or {}).get("properties") or {}
    profile = props.get("securityProfile", old.get("securityProfile")) or {}
    return profile.get("azureKeyVaultKms")


def _principal(ctx: PutContext) -> str | None:
    """The principal of the identity the cluster will have."""
    identity = ctx.body.get("identity") or (ctx.existing or {}).get("identity") or {}
    for uid in identity.get("userAssignedIdentities") or {}:
        uai = ctx.arm.get(uid)
        return uai["properties"]["principalId"] if uai else None
    return identity.get("principalId")


def _minor(version: str) -> tuple[int, int]:
    match = re.match(r"^(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else (0, 0)


def check(ctx: PutContext, provider: KmsProvider, kubernetes_version: str) -> None:
    """400 for KMS settings Azure refuses."""
    kms = effective_kms(ctx)
    if not kms or not kms.get("enabled"):
        if (kms or {}).get("keyId"):
            raise _bad(f"{FIELD}.keyId must be omitted when Azure Key Vault KMS is disabled.")
        return
    key_id = kms.get("keyId")
    if not key_id:
        raise _bad(f"{FIELD}.keyId is required when Azure Key Vault KMS is enabled.")
    access = kms.get("keyVaultNetworkAccess") or "Public"
    vault_id = kms.get("keyVaultResourceId")
    if access not in ("Public", "Private"):
        raise _bad(f"{FIELD}.keyVaultNetworkAccess '{access}' is not Public or Private.")
    if access == "Private" and not vault_id:
        raise _bad(
            "KeyVault resource ID is empty when KeyVault network access is Private.", "BadRequest"
        )
    if access == "Public" and vault_id:
        raise _bad(
            f"{FIELD}.keyVaultResourceId must be empty when keyVaultNetworkAccess is Public."
        )
    vault, _, version = provider.keyvault.resolve_key_url(key_id)
    if vault_id and vault_id.lower() != vault["id"].lower():
        raise _bad(f"{FIELD}.keyVaultResourceId '{vault_id}' is not the vault of key '{key_id}'.")
    if provider.version_id(key_id) != key_id.rstrip("/"):  # versionless: the new experience
        if ctx.api_version < VERSIONLESS_SINCE:
            raise _bad(
                f"{FIELD}.keyId '{key_id}' has no key version: API versions before "
                f"{VERSIONLESS_SINCE} need a versioned key identifier."
            )
        if _minor(kubernetes_version) < VERSIONLESS_KUBERNETES:
            raise _bad(
                f"{FIELD}.keyId '{key_id}' has no key version: the new KMS experience needs "
                f"Kubernetes 1.33 or newer (the cluster runs {kubernetes_version})."
            )
    if not version.kty.startswith("RSA"):
        raise _bad(f"{FIELD}.keyId '{key_id}' is a {version.kty} key; KMS needs an RSA key.")
    principal = _principal(ctx)
    problem = provider.problem(provider.version_id(key_id), Caller(principal, access == "Private"))
    if problem:
        code, message = problem
        raise _bad(message, code if code == ACCESS_ERROR else "InvalidParameter")
    if access == "Private" and not principal_allowed(
        ctx.arm, str(principal), APPROVE_PRIVATE_ENDPOINT, vault["id"]
    ):
        raise _bad(
            f"The client '{principal}' with object id '{principal}' does not have authorization "
            f"to perform action '{APPROVE_PRIVATE_ENDPOINT}' over scope '{vault['id']}' or the "
            "scope is invalid.",
            "AuthorizationFailed",
        )


def stuck(ctx: PutContext, kube: KubernetesModel, provider: KmsProvider) -> bool:
    """A new key while Secrets are sealed with a key the new slots would drop."""
    kms = effective_kms(ctx)
    cluster = kube.of_resource(ctx.rid.id())
    if not ctx.existing or not kms or not kms.get("enabled") or cluster is None:
        return False
    wanted = provider.version_id(kms["keyId"])
    current = cluster.kms_slots.current
    if current is None or wanted == current:
        return False
    return any(s.key not in (None, current) for s in cluster.sealed.values())


def settle(resource: dict[str, Any], kube: KubernetesModel, provider: KmsProvider) -> None:
    """The cluster's key becomes the current slot once its update succeeded."""
    kms = settings(resource)
    cluster = kube.of_resource(resource["id"])
    if kms is not None and cluster is not None:
        cluster.kms_slots.take(provider.version_id(kms["keyId"]))


def failure(resource: dict[str, Any], kube: KubernetesModel, provider: KmsProvider) -> None:
    """A settled cluster whose KMS key (either slot in use) cannot be used goes Failed."""
    kms = settings(resource)
    cluster = kube.of_resource(resource["id"])
    props = resource["properties"]
    if kms is None or cluster is None or props.get("provisioningState") != "Succeeded":
        return
    in_use = {s.key for s in cluster.sealed.values()} - {None}
    keys = [cluster.kms_slots.current or kms["keyId"]]
    keys += [k for k in [cluster.kms_slots.previous] if k in in_use]
    for key in keys:
        problem = provider.problem(str(key), plugin_caller(resource))
        if problem:
            props["provisioningState"] = "Failed"
            props["status"] = {"provisioningError": {"code": problem[0], "message": problem[1]}}
            return
