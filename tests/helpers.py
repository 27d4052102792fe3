"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

from typing import Any

import requests
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    Sku,
    VaultCreateOrUpdateParameters,
    VaultProperties,
)

from clients.azure import AzureClients
from emulator.server import Emulator


def vault_parameters(
    emulator: Emulator,
    rbac: bool = False,
    key_permissions: list[str] | None = None,
    object_id: str | None = None,
) -> VaultCreateOrUpdateParameters:
    """A purge-protected vault; access-policy vaults grant the test principal `key_permissions`
    (default: all)."""
    policies = (
        []
        if rbac
        else [
            AccessPolicyEntry(
                tenant_id=emulator.identity.tenant_id,
                object_id=object_id or emulator.state.service_principal.object_id,
                permissions=Permissions(keys_property=key_permissions or ["all"]),
            )
        ]
    )
    return VaultCreateOrUpdateParameters(
        location="westeurope",
        properties=VaultProperties(
            tenant_id=emulator.identity.tenant_id,
            sku=Sku(family="A", name="standard"),
            enable_purge_protection=True,
            enable_rbac_authorization=rbac,
            access_policies=policies,
        ),
    )


def arm_request(
    emulator: Emulator,
    azure: AzureClients,
    method: str,
    path: str,
    body: Any = None,
    api_version: str = "2024-11-30",
) -> requests.Response:
    """A raw ARM request with a valid token (for answers the SDKs would act on)."""
    token = azure.credential.get_token("https://management.azure.com/.default").token
    sep = "&" if "?" in path else "?"
    url = f"{emulator.base_url}/subscriptions/{emulator.identity.subscription_id}{path}"
    if api_version:
        url += f"{sep}api-version={api_version}"
    return requests.request(
        method,
        url,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
