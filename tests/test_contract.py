"""Contract: the initial status codes the emulator answers for each emulated long-running
operation are the ones the pinned SDKs accept. When an SDK upgrade changes them this fails,
naming the operation, before a flow fails against Azure."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from azure.mgmt.resource.deployments import DeploymentsMgmtClient

from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.services.arm.models import TypeSpec

# (client, operations group, method doing the initial request, emulated type, what the
# emulator answers: a TypeSpec field or a fixed status, the statuses the SDK accepts)
CONTRACT = [
    (
        "compute",
        "disk_encryption_sets",
        "_create_or_update_initial",
        "Microsoft.Compute/diskEncryptionSets",
        "create_status",
        {200, 202},
    ),
    (
        "compute",
        "disk_encryption_sets",
        "_update_initial",
        "Microsoft.Compute/diskEncryptionSets",
        "update_status",
        {200, 202},
    ),
    (
        "keyvault_management",
        "vaults",
        "_create_or_update_initial",
        "Microsoft.KeyVault/vaults",
        "create_status",
        {200, 201},
    ),
    ("keyvault_management", "vaults", "update_access_policy", None, 200, {200, 201}),
    (
        "msi",
        "user_assigned_identities",
        "create_or_update",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "create_status",
        {200, 201},
    ),
    (
        "authorization",
        "role_assignments",
        "create",
        "Microsoft.Authorization/roleAssignments",
        "create_status",
        {200, 201},
    ),
    (
        "compute",
        "galleries",
        "_create_or_update_initial",
        "Microsoft.Compute/galleries",
        "create_status",
        {200, 201, 202},
    ),
    (
        "compute",
        "gallery_images",
        "_create_or_update_initial",
        "Microsoft.Compute/galleries/images",
        "create_status",
        {200, 201, 202},
    ),
    (
        "compute",
        "gallery_image_versions",
        "_create_or_update_initial",
        "Microsoft.Compute/galleries/images/versions",
        "create_status",
        {200, 201, 202},
    ),
    (
        "compute",
        "images",
        "_create_or_update_initial",
        "Microsoft.Compute/images",
        "create_status",
        {200, 201},
    ),
    (
        "compute",
        "snapshots",
        "_create_or_update_initial",
        "Microsoft.Compute/snapshots",
        "create_status",
        {200, 202},
    ),
    (
        "container_service",
        "managed_clusters",
        "_create_or_update_initial",
        "Microsoft.ContainerService/managedClusters",
        "create_status",
        {200, 201},
    ),
    (
        "container_service",
        "agent_pools",
        "_create_or_update_initial",
        "Microsoft.ContainerService/managedClusters/agentPools",
        "create_status",
        {200, 201},
    ),
    ("resources", "resource_groups", "create_or_update", None, 201, {200, 201}),
    ("resources", "resource_groups", "_delete_initial", None, 202, {200, 202}),
    (
        "container_registry",
        "registries",
        "_create_initial",
        "Microsoft.ContainerRegistry/registries",
        "create_status",
        {200, 201},
    ),
    (
        "container_registry",
        "registries",
        "_update_initial",
        "Microsoft.ContainerRegistry/registries",
        "update_status",
        {200, 201},
    ),
    ("container_registry", "registries", "_import_image_initial", None, 200, {200, 202}),
    ("container_registry", "registries", "_delete_initial", None, 202, {200, 202, 204}),
    (
        "deployments",
        "deployments",
        "_create_or_update_initial",
        "Microsoft.Resources/deployments",
        "create_status",
        {200, 201},
    ),
    ("features", "features", "register", None, 200, {200}),
    ("resources", "providers", "register", None, 200, {200}),
]


def accepted_statuses(operations: Any, method: str) -> set[int]:
    """The status codes a generated SDK method accepts (its `status_code not in [...]`)."""
    source = inspect.getsource(getattr(type(operations), method))
    found = re.findall(r"status_code not in \[([0-9, ]+)\]", source)
    assert found, f"{type(operations).__name__}.{method} has no status check any more"
    return {int(code) for code in found[-1].split(",")}


@pytest.mark.parametrize(
    ("client", "group", "method", "rtype", "answer", "pinned"),
    CONTRACT,
    ids=[f"{c[1]}.{c[2]}" for c in CONTRACT],
)
def test_emulator_answers_what_the_sdk_accepts(
    emulator: Emulator,
    azure: AzureClients,
    client: str,
    group: str,
    method: str,
    rtype: str | None,
    answer: str | int,
    pinned: set[int],
) -> None:
    sdk = azure.arm(DeploymentsMgmtClient) if client == "deployments" else getattr(azure, client)()
    operations = getattr(sdk, group)
    accepted = accepted_statuses(operations, method)
    assert accepted == pinned, (
        f"{group}.{method} now accepts {sorted(accepted)} (was {sorted(pinned)}): "
        "update the emulator's TypeSpec and this contract"
    )
    if rtype is None:
        status = answer
    else:
        spec: TypeSpec = emulator.arm.types[rtype.lower()]
        status = getattr(spec, str(answer))
    assert status in accepted
