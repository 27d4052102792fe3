"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import requests
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    Sku,
    VaultCreateOrUpdateParameters,
    VaultProperties,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from clients.azure import AzureClients
from emulator.server import Emulator

# The display name of the flows' least-privileged principal (tests/flows/conftest.py).
FLOW_PRINCIPAL = "byok-flows-least-privilege"


def principal_ids(emulator: Emulator) -> list[str]:
    """The set-up principal's object id, then the flows' principal's, if this test has one."""
    state = emulator.state
    flows = [
        p.object_id for p in state.entra.principals.values() if p.display_name == FLOW_PRINCIPAL
    ]
    return [state.service_principal.object_id, *flows]


def run_records(flow_run_id: Any) -> list[str]:
    """A flow run's record, its task runs, logs and artifacts, as JSON texts (to search for
    secrets): read by the run's id, as the session's Prefect server holds every test's."""

    async def read() -> list[Any]:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        async with get_client() as client:
            return [
                *await client.read_flow_runs(flow_run_filter=runs),
                *await client.read_task_runs(flow_run_filter=runs),
                *await client.read_logs(logs),
                *await client.read_artifacts(flow_run_filter=runs),
            ]

    return [record.model_dump_json() for record in asyncio.run(read())]


def run_tables(flow_run_id: Any) -> dict[str, list[dict[str, str]]]:
    """A flow run's table artifacts by key."""

    async def read() -> list[Any]:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        async with get_client() as client:
            return await client.read_artifacts(flow_run_filter=runs)

    return {
        str(a.key): json.loads(a.data) if isinstance(a.data, str) else a.data
        for a in asyncio.run(read())
        if a.type == "table"
    }


READ_POSTS = (
    "/token",
    "/providers/Microsoft.ResourceGraph/resources",
    "/listClusterUserCredential",
    "/actions/unwrap",
)
"""POST requests that read (token requests, Resource Graph queries, an AKS cluster's user
kubeconfig, Key Protect's unwrap)."""


def write_requests(emulator: Emulator, after: int = 0) -> list[str]:
    """The writes the emulator served after its `after`-th logged request."""
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()[after:]
        if r.method in ("PUT", "PATCH", "DELETE")
        or (r.method == "POST" and not r.path.endswith(READ_POSTS))
    ]


def run_with_tables(flow: Any, request: Any) -> tuple[Any, dict[str, list[dict[str, str]]]]:
    """The flow's result and its run's table artifacts."""
    state = flow(request, return_state=True)
    return state.result(), run_tables(state.state_details.flow_run_id)


def outcomes(table: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(step, outcome without its details) of each row of a summary or plan table."""
    return [(row["step"], row["outcome"].split(" (")[0]) for row in table]


def as_plan(request: Any) -> Any:
    """The request with `plan_only` on."""
    return request.model_copy(update={"plan_only": True})


def vault_parameters(
    emulator: Emulator,
    rbac: bool = False,
    key_permissions: list[str] | None = None,
    object_id: str | None = None,
) -> VaultCreateOrUpdateParameters:
    """A purge-protected vault; access-policy vaults grant `key_permissions` (default: all) to
    `object_id`, or else to the test's set-up principal and the flows' principal, if any (the
    vault a user prepared for the tool)."""
    principals = [object_id] if object_id else principal_ids(emulator)
    policies = (
        []
        if rbac
        else [
            AccessPolicyEntry(
                tenant_id=emulator.identity.tenant_id,
                object_id=principal,
                permissions=Permissions(keys_property=key_permissions or ["all"]),
            )
            for principal in principals
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


def vault_with_key(
    azure: AzureClients,
    emulator: Emulator,
    group: str = "rg",
    vault: str = "kv-des",
    key: str = "des-key",
    rbac: bool = False,
) -> tuple[Any, str]:
    """A purge-protected vault in westeurope with an RSA 2048 key; returns (vault, key id)."""
    azure.resources().resource_groups.create_or_update(group, {"location": "westeurope"})
    created = (
        azure.keyvault_management()
        .vaults.begin_create_or_update(group, vault, vault_parameters(emulator, rbac=rbac))
        .result()
    )
    if rbac:
        grant_officer(azure, emulator, created.id)
    kid = azure.keys(str(created.properties.vault_uri)).create_rsa_key(key, size=2048).id
    return created, str(kid)


def grant_officer(azure: AzureClients, emulator: Emulator, scope: str) -> None:
    """Give the test principal the Key Vault Crypto Officer role at `scope`."""
    import uuid

    azure.authorization().role_assignments.create(
        scope,
        str(uuid.uuid4()),
        {
            "role_definition_id": f"{scope}/providers/Microsoft.Authorization/roleDefinitions/"
            "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
            "principal_id": emulator.state.service_principal.object_id,
        },
    )


def des_in_region(
    azure: AzureClients, emulator: Emulator, region: str, name: str, group: str = "rg-img"
) -> str:
    """A usable disk encryption set in `region` (its own vault there, access policy granted);
    returns its id."""
    azure.resources().resource_groups.create_or_update(group, {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.location = region
    vault = (
        azure.keyvault_management()
        .vaults.begin_create_or_update(group, f"kv-{name}", params)
        .result()
    )
    kid = azure.keys(str(vault.properties.vault_uri)).create_rsa_key("k", size=2048).id
    des = (
        azure.compute()
        .disk_encryption_sets.begin_create_or_update(
            group,
            name,
            {
                "location": region,
                "identity": {"type": "SystemAssigned"},
                "properties": {"activeKey": {"keyUrl": kid}},
            },
        )
        .result()
    )
    grant_wrap(azure, emulator, group, f"kv-{name}", des.identity.principal_id)
    return str(des.id)


def grant_wrap(
    azure: AzureClients, emulator: Emulator, group: str, vault: str, principal_id: str
) -> None:
    """An access policy letting `principal_id` get, wrap and unwrap with the vault's keys (what
    a disk encryption set's identity needs)."""
    from azure.mgmt.keyvault.models import (
        AccessPolicyEntry,
        Permissions,
        VaultAccessPolicyParameters,
        VaultAccessPolicyProperties,
    )

    entry = AccessPolicyEntry(
        tenant_id=emulator.identity.tenant_id,
        object_id=principal_id,
        permissions=Permissions(keys_property=["get", "wrapKey", "unwrapKey"]),
    )
    azure.keyvault_management().vaults.update_access_policy(
        group,
        vault,
        "add",
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[entry])
        ),
    )


def managed_image(
    azure: AzureClients,
    region: str,
    name: str = "src-image",
    luns: tuple[int, ...] = (0, 1),
    group: str = "rg-img",
) -> str:
    """A managed image with an OS disk and data disks at `luns`; returns its id."""
    azure.resources().resource_groups.create_or_update(group, {"location": region})
    image = (
        azure.compute()
        .images.begin_create_or_update(
            group,
            name,
            {
                "location": region,
                "properties": {
                    "storageProfile": {
                        "osDisk": {"osType": "Linux", "osState": "Generalized"},
                        "dataDisks": [{"lun": lun} for lun in luns],
                    }
                },
            },
        )
        .result()
    )
    return str(image.id)


def gallery_image(azure: AzureClients, group: str = "rg-img") -> None:
    """Gallery `g1` with the Linux, generalized image definition `img` (westeurope)."""
    compute = azure.compute()
    compute.galleries.begin_create_or_update(group, "g1", {"location": "westeurope"}).result()
    compute.gallery_images.begin_create_or_update(
        group,
        "g1",
        "img",
        {
            "location": "westeurope",
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "identifier": {"publisher": "p", "offer": "o", "sku": "s"},
            },
        },
    ).result()


class ManualClock:
    """A monotonic clock that stands still until a test moves `now`."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
