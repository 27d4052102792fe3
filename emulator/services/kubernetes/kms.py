"""The KMS v2 provider of an emulated cluster's API server: the Azure Key Vault key that
`securityProfile.azureKeyVaultKms` names, seen through the cluster identity's access, and the
two key slots the plugin holds (current and previous: Azure/AKS #4926). Secrets are sealed
with a fresh data key wrapped by the current slot's key version (RSA-OAEP-256 `encrypt`, as
https://github.com/Azure/kubernetes-kms does) and opened only while their key is in a slot,
enabled, unexpired and usable by the identity."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.http import HttpError
from emulator.services.keyvault import crypto
from emulator.services.keyvault.models import KeyVaultModel, KeyVersion, public_access_disabled
from emulator.services.kubernetes.status import KubeError

ALG = "RSA-OAEP-256"
KMS_KEY_OPERATIONS = frozenset({"encrypt", "decrypt"})
# AKS's answer when the identity cannot use the key (MicrosoftDocs/azure-docs#98954).
ACCESS_ERROR = "AzureKeyVaultKmsValidateIdentityPermissionCustomerError"


@dataclass
class Sealed:
    """A Secret's data as etcd holds it: plaintext when KMS is off (`key` None)."""

    key: str | None  # the versioned key id that wrapped the data key
    wrapped_key: bytes
    nonce: bytes
    data: bytes


@dataclass
class Slots:
    """The plugin's key slots: versioned key ids, newest first."""

    current: str | None = None
    previous: str | None = None

    def take(self, key_id: str) -> None:
        """A new current key: the old one moves to the previous slot."""
        if key_id != self.current:
            self.previous, self.current = self.current, key_id


def settings(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """The cluster's enabled `azureKeyVaultKms`, or None."""
    kms = ((cluster.get("properties") or {}).get("securityProfile") or {}).get("azureKeyVaultKms")
    return kms if kms and kms.get("enabled") else None


@dataclass(frozen=True)
class Caller:
    """How a cluster's KMS plugin reaches Key Vault: as the control plane identity, over the
    public network or through the private endpoint AKS makes (`keyVaultNetworkAccess`)."""

    principal: str | None
    private: bool = False


def plugin_caller(cluster: dict[str, Any]) -> Caller:
    """The cluster's plugin: its identity's principal (user-assigned first, else system)."""
    identity = cluster.get("identity") or {}
    assigned = list((identity.get("userAssignedIdentities") or {}).values())
    principal = str(assigned[0].get("principalId")) if assigned else identity.get("principalId")
    kms = settings(cluster) or {}
    return Caller(principal, kms.get("keyVaultNetworkAccess") == "Private")


class KmsProvider:
    """Key Vault seen by the KMS plugin of every cluster."""

    def __init__(self, keyvault: KeyVaultModel) -> None:
        self.keyvault = keyvault

    def version_id(self, key_id: str) -> str:
        """The versioned id a (possibly versionless) key id resolves to now."""
        _, key, version = self.keyvault.resolve_key_url(key_id)
        base = key_id.rstrip("/")
        if base.lower().endswith(f"/keys/{key.name.lower()}"):
            return f"{base}/{version.version}"
        return base

    def problem(self, key_id: str, caller: Caller) -> tuple[str, str] | None:
        """Why the plugin cannot use `key_id` now ((code, message)), or None. The codes
        besides the access one are the emulator's: AKS does not document them. Over the
        public network the vault must be open to all networks: AKS does not support a vault
        firewall that admits selected networks ("the firewall blocks traffic from the KMS
        plugin": https://learn.microsoft.com/azure/aks/use-kms-etcd-encryption#limitations),
        and answers such a vault with its access error (Azure/terraform-azurerm-aks#390,
        MicrosoftDocs/azure-docs#98954)."""
        try:
            vault, _, version = self.keyvault.resolve_key_url(key_id)
        except HttpError as exc:
            return exc.code, exc.message
        if not version.enabled:
            return "KeyVaultKeyDisabled", f"The key '{key_id}' is disabled."
        if version.exp is not None and version.exp <= self.keyvault.clock.now():
            return "KeyExpired", f"The key '{key_id}' expired."
        granted = self.keyvault.effective_key_operations(vault, str(caller.principal))
        acls = vault["properties"].get("networkAcls") or {}
        closed = public_access_disabled(vault) or acls.get("defaultAction") == "Deny"
        if not granted >= KMS_KEY_OPERATIONS or (closed and not caller.private):
            return (
                ACCESS_ERROR,
                f"The identity does not have keys encrypt/decrypt permission on key vault "
                f"'{vault['name']}'.",
            )
        return None

    def _usable(self, key_id: str, caller: Caller) -> KeyVersion:
        problem = self.problem(key_id, caller)
        if problem:
            raise KubeError(500, "InternalError", f"Internal error occurred: KMS: {problem[1]}")
        return self.keyvault.resolve_key_url(key_id)[2]

    def seal(self, key_id: str | None, caller: Caller, plaintext: bytes) -> Sealed:
        """Encrypt with a fresh data key wrapped by `key_id` (None: stored as is)."""
        if key_id is None:
            return Sealed(None, b"", b"", plaintext)
        version = self._usable(key_id, caller)
        data_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
        wrapped = crypto.wrap(version.material, ALG, data_key, "encrypt")
        return Sealed(key_id, wrapped, nonce, AESGCM(data_key).encrypt(nonce, plaintext, None))

    def open(self, sealed: Sealed, slots: Slots, caller: Caller) -> bytes:
        """Decrypt; 500 when the key left the slots or cannot be used."""
        if sealed.key is None:
            return sealed.data
        if sealed.key not in (slots.current, slots.previous):
            raise KubeError(
                500,
                "InternalError",
                f"Internal error occurred: KMS: the key '{sealed.key}' is in neither key slot",
            )
        version = self._usable(sealed.key, caller)
        data_key = crypto.unwrap(version.material, ALG, sealed.wrapped_key, "decrypt")
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.data, None)
