"""Rules of the key sources beyond one vault (no Prefect import): the key-store choice of a
request (a vault or a managed HSM), Managed HSM key ids and activation, cross-tenant sets,
keys for confidential VMs and their offline rotation window. Each rule raises
`InvalidRequest` (field, value, rule) before anything is written."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import Field

from byok.errors import InvalidRequest
from byok.keyvault_ids import KeyId

StoreKind = Literal["key-vault", "managed-hsm"]
# The request fields choosing where a flow's key lives (with `vault_name`, whose description
# is the flow's own).
KEY_STORE_FIELD: Any = Field(  # Any: a FieldInfo standing for a StoreKind default
    "key-vault",
    description="Where the key lives: a key vault (`vault_name`) or a managed HSM (`hsm_name`).",
)
HSM_NAME_FIELD = Field(
    None,
    description="Managed HSM holding the key, with key_store managed-hsm: an existing, "
    "activated HSM in `location`, which this tool adopts and never creates (creating one "
    "takes a security domain ceremony by your officers). This tool's principal needs its "
    "local roles Managed HSM Crypto User and Crypto Officer, granted by its administrators.",
)
HSM_GROUP_FIELD = Field(
    None, description="Resource group of the managed HSM. Default: `resource_group`."
)
# Data-plane host labels: https://<vault>.vault.<suffix>, https://<hsm>.managedhsm.<suffix>
# (https://learn.microsoft.com/azure/key-vault/keys/about-keys).
_HOST_LABEL = {"key-vault": "vault", "managed-hsm": "managedhsm"}
HSM_KEY_TYPES = ("RSA-HSM", "EC-HSM", "oct-HSM")


def _is_dns_name(host: str) -> bool:
    """False for IP literals and localhost (an emulator's origins): their host says nothing
    about the store."""
    if host == "localhost":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class ChoosesKeyStore(Protocol):
    """A request naming where its key lives (a vault, or an HSM it adopts) and the key."""

    subscription_id: str | None
    resource_group: str
    location: str
    key_store: StoreKind
    vault_name: str | None
    hsm_name: str | None
    key_name: str

    @property
    def hsm_group(self) -> str:
        """The managed HSM's resource group."""
        ...


def check_store_named(kind: StoreKind, vault_name: str | None, hsm_name: str | None) -> None:
    """The chosen store is named: `vault_name` with a key vault, `hsm_name` with an HSM."""
    field, value = ("hsm_name", hsm_name) if kind == "managed-hsm" else ("vault_name", vault_name)
    if not value:
        raise InvalidRequest(field, value, f"required with key_store {kind}")


def check_key_id(field: str, key_id: str, kind: StoreKind) -> KeyId:
    """A key id of the given store kind: `https://<name>.managedhsm.<suffix>/keys/...` for a
    managed HSM, `https://<name>.vault.<suffix>/keys/...` for a vault."""
    try:
        parsed = KeyId.parse(key_id)
    except ValueError as exc:
        raise InvalidRequest(field, key_id, str(exc)) from None
    host = urlsplit(parsed.vault_url).hostname or ""
    labels = host.split(".")
    if _is_dns_name(host) and (len(labels) < 3 or labels[1] != _HOST_LABEL[kind]):
        label = labels[1] if len(labels) > 2 else ""
        found = {v: k for k, v in _HOST_LABEL.items()}.get(label, "neither store")
        raise InvalidRequest(
            field,
            key_id,
            f"a {kind} key id has the host <name>.{_HOST_LABEL[kind]}.<dns suffix> "
            f"(this host: {found})",
        )
    return parsed


def check_hsm_activated(field: str, hsm_name: str, activation_status: str | None) -> None:
    """A managed HSM is usable once its security domain was downloaded
    (https://learn.microsoft.com/azure/key-vault/managed-hsm/quick-create-cli)."""
    if activation_status != "Active":
        raise InvalidRequest(
            field,
            hsm_name,
            f"the managed HSM is not activated (activationStatus {activation_status}): "
            "download its security domain first",
        )


def _region(location: str) -> str:
    return location.lower().replace(" ", "")


def check_cross_tenant_region(field: str, set_location: str, vault_location: str) -> None:
    """A cross-tenant disk encryption set is in its key vault's region ("Managed disks and
    the customer's Key Vault must be in the same Azure region",
    https://learn.microsoft.com/azure/virtual-machines/disks-cross-tenant-customer-managed-keys)."""
    if _region(set_location) != _region(vault_location):
        raise InvalidRequest(
            field,
            set_location,
            f"a cross-tenant disk encryption set must be in its key's region ({vault_location})",
        )


def check_release_policy(field: str, exportable: bool, release_policy: Any, kty: str) -> None:
    """An exportable key needs a release policy and the reverse (Key Vault's AKV.SKR.1004 and
    AKV.SKR.1005); exportable keys are HSM keys
    (https://learn.microsoft.com/azure/key-vault/keys/policy-grammar)."""
    if release_policy and not exportable:
        raise InvalidRequest(
            field, kty, "a key with a release policy must be exportable (exportable: true)"
        )
    if exportable and not release_policy:
        raise InvalidRequest(field, kty, "an exportable key needs a release policy")
    if exportable and kty not in HSM_KEY_TYPES:
        raise InvalidRequest(
            field, kty, f"an exportable key is an HSM key ({', '.join(HSM_KEY_TYPES)})"
        )


def check_confidential_key(field: str, kty: str, exportable: bool, release_policy: Any) -> None:
    """The key of a ConfidentialVmEncryptedWithCustomerKey set: an exportable RSA-HSM key with
    the confidential-VM release policy
    (https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-azure-cli)."""
    check_release_policy(field, exportable, release_policy, kty)
    if kty != "RSA-HSM" or not exportable:
        raise InvalidRequest(
            field,
            kty,
            "a confidential-VM set needs an exportable RSA-HSM key with a release policy",
        )


def check_rotation_window(field: str, window: float, stop_start: float, unit: str = "s") -> None:
    """An offline rotation stops every VM on the set, rotates and starts them: the window must
    hold the measured stop and start time (both in `unit`)."""
    if window < stop_start:
        raise InvalidRequest(
            field,
            window,
            f"shorter than the measured stop and start time of the set's VMs "
            f"({stop_start:g} {unit})",
        )
