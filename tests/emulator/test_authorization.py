"""Azure RBAC in the emulator: built-in role definitions, the `allowed` rule over role
assignments with scope inheritance, and ARM writes checked behind a switch (off by
default)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.services.arm.ids import write_action
from emulator.services.authorization.roles import BUILT_IN_ROLES, allowed
from tests.conftest import emulator_credentials

SUB = "/subscriptions/5f6a9e1c-0000-4000-8000-00000000b10c"
RG = f"{SUB}/resourceGroups/rg-a"
VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/kv1"
CLUSTER = f"{RG}/providers/Microsoft.ContainerService/managedClusters/c1"
ROLES = {r.name: r.id for r in BUILT_IN_ROLES.values()}


def assignment(role: str, scope: str, principal: str = "p1") -> dict:
    return {
        "properties": {
            "principalId": principal,
            "scope": scope,
            "roleDefinitionId": f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
            + ROLES[role],
        }
    }


@pytest.mark.parametrize(
    ("role", "at", "action", "scope", "data", "expected"),
    [
        ("Owner", SUB, "Microsoft.Authorization/roleAssignments/write", VAULT, False, True),
        ("Contributor", SUB, "Microsoft.Compute/diskEncryptionSets/write", VAULT, False, True),
        ("Contributor", SUB, "Microsoft.Authorization/roleAssignments/write", RG, False, False),
        ("Contributor", RG, "Microsoft.Compute/galleries/share/action", RG, False, False),
        ("Reader", SUB, "Microsoft.KeyVault/vaults/read", VAULT, False, True),
        ("Reader", SUB, "Microsoft.KeyVault/vaults/write", VAULT, False, False),
        ("User Access Administrator", RG, "Microsoft.Authorization/roleAssignments/write", VAULT,
         False, True),
        ("User Access Administrator", RG, "Microsoft.KeyVault/vaults/write", VAULT, False, False),
        ("Contributor", RG, "Microsoft.KeyVault/vaults/write", f"{SUB}/resourceGroups/rg-b",
         False, False),
        ("Contributor", VAULT, "Microsoft.Resources/subscriptions/resourceGroups/write", RG,
         False, False),
        ("Owner", SUB, "Microsoft.KeyVault/vaults/keys/wrap/action", VAULT, True, False),
        ("Key Vault Crypto Service Encryption User", VAULT,
         "Microsoft.KeyVault/vaults/keys/unwrap/action", VAULT, True, True),
        ("Key Vault Crypto Service Encryption User", VAULT,
         "Microsoft.KeyVault/vaults/keys/create/action", VAULT, True, False),
        ("Key Vault Crypto Officer", RG, "Microsoft.KeyVault/vaults/keys/rotate/action", VAULT,
         True, True),
        ("Key Vault Crypto Officer", RG, "Microsoft.KeyVault/vaults/write", VAULT, False, False),
        ("Key Vault Administrator", SUB, "Microsoft.KeyVault/vaults/keys/create/action", VAULT,
         True, True),
        ("Managed Identity Operator", RG,
         "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
         f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1", False, True),
        ("Managed Identity Operator", RG,
         "Microsoft.ManagedIdentity/userAssignedIdentities/write",
         f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1", False, False),
        ("Managed Identity Contributor", RG,
         "Microsoft.ManagedIdentity/userAssignedIdentities/write",
         f"{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1", False, True),
        ("Key Vault Contributor", RG, "Microsoft.KeyVault/vaults/write", VAULT, False, True),
        ("Key Vault Contributor", RG, "Microsoft.KeyVault/managedHSMs/write",
         f"{RG}/providers/Microsoft.KeyVault/managedHSMs/h1", False, False),
        ("Key Vault Contributor", RG, "Microsoft.KeyVault/vaults/keys/create/action", VAULT,
         True, False),
        ("Key Vault Contributor", RG, "Microsoft.Authorization/roleAssignments/write", VAULT,
         False, False),
        ("Reader", SUB,
         "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
         CLUSTER, False, False),
        ("Azure Kubernetes Service Cluster User Role", CLUSTER,
         "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
         CLUSTER, False, True),
        ("Azure Kubernetes Service Cluster User Role", CLUSTER,
         "Microsoft.ContainerService/managedClusters/write", CLUSTER, False, False),
    ],
)  # fmt: skip
def test_allowed(role: str, at: str, action: str, scope: str, data: bool, expected: bool) -> None:
    assert allowed([assignment(role, at)], "p1", action, scope, data) is expected
    assert allowed([assignment(role, at, "p2")], "p1", action, scope, data) is False


def test_role_definitions_are_served_with_their_permissions(azure: AzureClients) -> None:
    definitions = azure.authorization().role_definitions
    found = list(definitions.list(SUB, filter="roleName eq 'Contributor'"))
    assert [d.role_name for d in found] == ["Contributor"]
    permissions = found[0].permissions[0]
    assert permissions.actions == ["*"]
    assert "Microsoft.Authorization/*/Write" in permissions.not_actions
    officer = definitions.get(SUB, ROLES["Key Vault Crypto Officer"])
    assert officer.permissions[0].data_actions == [
        "Microsoft.KeyVault/vaults/keys/*",
        "Microsoft.KeyVault/vaults/keyrotationpolicies/*",
    ]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PUT", RG, ("Microsoft.Resources/subscriptions/resourceGroups/write", RG)),
        ("DELETE", VAULT, ("Microsoft.KeyVault/vaults/delete", VAULT)),
        ("PUT", VAULT + "/accessPolicies/add",
         ("Microsoft.KeyVault/vaults/accessPolicies/write", VAULT + "/accessPolicies/add")),
        ("POST", f"{RG}/providers/Microsoft.Compute/galleries/g1/share",
         ("Microsoft.Compute/galleries/share/action",
          f"{RG}/providers/Microsoft.Compute/galleries/g1")),
        ("POST", f"{SUB}/providers/Microsoft.Compute/register",
         ("Microsoft.Compute/register/action", SUB)),
        ("GET", VAULT, None),
    ],
)  # fmt: skip
def test_write_action(method: str, path: str, expected: tuple[str, str] | None) -> None:
    assert write_action(method, path) == expected


def test_writes_are_checked_only_when_enforced(azure: AzureClients, emulator: Emulator) -> None:
    state = emulator.state
    sub = f"/subscriptions/{emulator.identity.subscription_id}"
    worker = state.add_service_principal(name="worker")
    clients = AzureClients(
        emulator_credentials(emulator, client_id=worker.client_id, client_secret=worker.secret)
    )
    groups = clients.resources().resource_groups
    groups.create_or_update("rg-a", {"location": "westeurope"})  # off: no role needed
    azure.resources().resource_groups.create_or_update("rg-b", {"location": "westeurope"})

    state.arm.enforce_authorization = True
    state.grant_role(worker.object_id, "Contributor", f"{sub}/resourceGroups/rg-a")
    identities = clients.msi().user_assigned_identities
    assert identities.create_or_update("rg-a", "id1", {"location": "westeurope"}).name == "id1"
    with pytest.raises(HttpResponseError) as info:
        identities.create_or_update("rg-b", "id2", {"location": "westeurope"})
    assert (info.value.status_code, info.value.error.code) == (403, "AuthorizationFailed")
    assert info.value.error.message == (
        f"The client '{worker.client_id}' with object id '{worker.object_id}' does not have "
        "authorization to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/"
        f"write' over scope '{sub}/resourceGroups/rg-b/providers/Microsoft.ManagedIdentity/"
        "userAssignedIdentities/id2' or the scope is invalid. If access was recently granted, "
        "please refresh your credentials."
    )
    with pytest.raises(HttpResponseError, match="AuthorizationFailed"):
        groups.create_or_update("rg-c", {"location": "westeurope"})
    assert not azure.resources().resource_groups.check_existence("rg-c")
    assert [g.name for g in groups.list()] == ["rg-a", "rg-b"]  # reads are not checked


def test_the_caller_reads_its_own_permissions_at_a_scope(emulator: Emulator) -> None:
    state = emulator.state
    state.arm.enforce_authorization = True  # unenforced, everything is allowed (tested below)
    sub = f"/subscriptions/{emulator.identity.subscription_id}"
    worker = state.add_service_principal(name="worker")
    state.grant_role(worker.object_id, "Contributor", sub)
    state.grant_role(worker.object_id, "Key Vault Crypto Officer", f"{sub}/resourceGroups/rg-b")
    clients = AzureClients(
        emulator_credentials(emulator, client_id=worker.client_id, client_secret=worker.secret)
    )
    clients.resources().resource_groups.create_or_update("rg-a", {"location": "westeurope"})
    permissions = clients.authorization().permissions
    (contributor,) = permissions.list_for_resource_group("rg-a")
    assert contributor.actions == ["*"]
    assert "Microsoft.Authorization/*/Write" in contributor.not_actions
    found = permissions.list_for_resource("rg-b", "Microsoft.KeyVault", "", "vaults", "kv1")
    assert sorted(p.data_actions == [] for p in found) == [False, True]


def test_without_enforcement_the_permissions_say_everything(
    emulator: Emulator, azure: AzureClients
) -> None:
    azure.resources().resource_groups.create_or_update("rg-a", {"location": "westeurope"})
    (everything,) = azure.authorization().permissions.list_for_resource_group("rg-a")
    assert (everything.actions, everything.not_actions) == (["*"], [])
