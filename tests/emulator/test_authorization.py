"""Azure RBAC in the emulator: built-in role definitions, the `allowed` rule over role
assignments with scope inheritance, and ARM writes and reads checked behind a switch (off by
default): reads refused without a role at the scope or above, lists and Resource Graph
answering only what the caller can read."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resourcegraph.models import QueryRequest

from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.services.arm.ids import ReadAction, read_action, write_action
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
    state.grant_role(state.service_principal.object_id, "Owner", sub)
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
    assert [g.name for g in groups.list()] == ["rg-a"]  # only the groups it can read


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


MSI = "Microsoft.ManagedIdentity/userAssignedIdentities"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", VAULT, ReadAction("Microsoft.KeyVault/vaults/read", VAULT)),
        ("HEAD", RG, ReadAction("Microsoft.Resources/subscriptions/resourceGroups/read", RG)),
        ("GET", RG + "/resources",
         ReadAction("Microsoft.Resources/subscriptions/resourceGroups/resources/read", RG)),
        ("GET", RG + "/providers/Microsoft.KeyVault/vaults",
         ReadAction("Microsoft.KeyVault/vaults/read", RG)),
        ("GET", CLUSTER + "/agentPools",
         ReadAction("Microsoft.ContainerService/managedClusters/agentPools/read", CLUSTER)),
        ("GET", SUB, ReadAction("Microsoft.Resources/subscriptions/read", SUB, filtered=True)),
        ("GET", SUB + "/resourcegroups",
         ReadAction("Microsoft.Resources/subscriptions/resourceGroups/read", SUB, filtered=True)),
        ("GET", SUB + "/providers/Microsoft.Compute/disks",
         ReadAction("Microsoft.Compute/disks/read", SUB, filtered=True)),
        ("GET", SUB + "/providers/Microsoft.Compute",
         ReadAction("Microsoft.Resources/subscriptions/providers/read", SUB, filtered=True)),
        ("GET", SUB + "/providers/Microsoft.Features/providers/Microsoft.Compute/features/X",
         ReadAction("Microsoft.Features/providers/features/read", SUB)),
        ("GET", SUB + "/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/kv1",
         ReadAction("Microsoft.KeyVault/locations/deletedVaults/read", SUB)),
        ("GET", SUB + "/providers/Microsoft.Compute/locations/westeurope/operationStatuses/o1",
         ReadAction("Microsoft.Compute/locations/operationStatuses/read", SUB, filtered=True)),
        ("GET", VAULT + "/providers/Microsoft.Authorization/roleAssignments",
         ReadAction("Microsoft.Authorization/roleAssignments/read", VAULT)),
        ("GET", RG + "/providers/Microsoft.Authorization/permissions", None),
        ("GET", "/subscriptions", None),
        ("PUT", VAULT, None),
        ("POST", CLUSTER + "/listClusterUserCredential", None),
    ],
)  # fmt: skip
def test_read_action(method: str, path: str, expected: ReadAction | None) -> None:
    assert read_action(method, path) == expected


@pytest.fixture
def reader(emulator: Emulator, azure: AzureClients) -> AzureClients:
    """A principal holding Reader on rg-a only, with an identity in rg-a and in rg-b."""
    state = emulator.state
    for group in ("rg-a", "rg-b"):
        azure.resources().resource_groups.create_or_update(group, {"location": "westeurope"})
        azure.msi().user_assigned_identities.create_or_update(
            group, f"id-{group}", {"location": "westeurope"}
        )
    worker = state.add_service_principal(name="worker")
    state.grant_role(
        worker.object_id,
        "Reader",
        f"/subscriptions/{emulator.identity.subscription_id}/resourceGroups/rg-a",
    )
    state.arm.enforce_authorization = True
    return AzureClients(
        emulator_credentials(emulator, client_id=worker.client_id, client_secret=worker.secret)
    )


def refusal(call: object) -> tuple[int, str, str]:
    """The status, code and message of an ARM error (a HEAD's has no body)."""
    with pytest.raises(HttpResponseError) as info:
        call()  # type: ignore[operator]
    error = info.value.error
    return info.value.status_code, error.code if error else "", error.message if error else ""


def test_reads_need_a_role_at_the_scope_or_above(reader: AzureClients, emulator: Emulator) -> None:
    sub = f"/subscriptions/{emulator.identity.subscription_id}"
    identities = reader.msi().user_assigned_identities
    assert identities.get("rg-a", "id-rg-a").name == "id-rg-a"  # inherited from the group
    status, code, message = refusal(lambda: identities.get("rg-b", "id-rg-b"))
    assert (status, code) == (403, "AuthorizationFailed")
    assert message.startswith("The client '") and message.endswith(
        f"does not have authorization to perform action '{MSI}/read' over scope "
        f"'{sub}/resourceGroups/rg-b/providers/{MSI}/id-rg-b' or the scope is invalid. If "
        "access was recently granted, please refresh your credentials."
    )
    groups = reader.resources().resource_groups
    assert groups.get("rg-a").name == "rg-a"
    assert refusal(lambda: groups.get("rg-b"))[:2] == (403, "AuthorizationFailed")
    assert refusal(lambda: groups.check_existence("rg-b"))[0] == 403
    # a resource group's resources: refused without a role on the group
    resources = reader.resources().resources
    assert [r.name for r in resources.list_by_resource_group("rg-a")] == ["id-rg-a"]
    assert (
        "'Microsoft.Resources/subscriptions/resourceGroups/resources/read' over scope "
        in (refusal(lambda: list(resources.list_by_resource_group("rg-b")))[2])
    )
    assert refusal(lambda: list(identities.list_by_resource_group("rg-b")))[0] == 403
    # the subscription's lists hold only what it can read; so does its subscription list
    assert [g.name for g in groups.list()] == ["rg-a"]
    assert [r.name for r in resources.list()] == ["id-rg-a"]
    assert [i.name for i in identities.list_by_subscription()] == ["id-rg-a"]
    assert [s.subscription_id for s in reader.subscriptions().subscriptions.list()] == [
        emulator.identity.subscription_id
    ]


def test_a_role_on_one_resource_reads_that_resource_only(
    emulator: Emulator, azure: AzureClients
) -> None:
    state = emulator.state
    sub = f"/subscriptions/{emulator.identity.subscription_id}"
    azure.resources().resource_groups.create_or_update("rg-a", {"location": "westeurope"})
    for name in ("id1", "id2"):
        azure.msi().user_assigned_identities.create_or_update(
            "rg-a", name, {"location": "westeurope"}
        )
    worker = state.add_service_principal(name="worker")
    nobody = state.add_service_principal(name="nobody")
    state.grant_role(worker.object_id, "Reader", f"{sub}/resourceGroups/rg-a/providers/{MSI}/id1")
    state.arm.enforce_authorization = True
    clients = AzureClients(
        emulator_credentials(emulator, client_id=worker.client_id, client_secret=worker.secret)
    )
    identities = clients.msi().user_assigned_identities
    assert identities.get("rg-a", "id1").name == "id1"
    assert refusal(lambda: identities.get("rg-a", "id2"))[0] == 403
    assert refusal(lambda: clients.resources().resource_groups.get("rg-a"))[0] == 403
    assert [i.name for i in identities.list_by_subscription()] == ["id1"]
    # no role anywhere in the subscription: not even the subscription is readable
    outsider = AzureClients(
        emulator_credentials(emulator, client_id=nobody.client_id, client_secret=nobody.secret)
    )
    assert list(outsider.subscriptions().subscriptions.list()) == []
    status, code, message = refusal(lambda: list(outsider.resources().resource_groups.list()))
    assert (status, code) == (403, "AuthorizationFailed")
    assert "'Microsoft.Resources/subscriptions/resourceGroups/read' over scope " in message
    # unenforced, every caller reads everything
    state.arm.enforce_authorization = False
    assert outsider.msi().user_assigned_identities.get("rg-a", "id2").name == "id2"


def test_resource_graph_answers_only_what_the_caller_can_read(
    reader: AzureClients, emulator: Emulator
) -> None:
    sub = emulator.identity.subscription_id
    query = QueryRequest(subscriptions=[sub], query=f"Resources | where type =~ '{MSI}'")
    rows = reader.resource_graph().resources(query).data
    assert [r["name"] for r in rows] == ["id-rg-a"]
    nobody = emulator.state.add_service_principal(name="nobody")
    outsider = AzureClients(
        emulator_credentials(emulator, client_id=nobody.client_id, client_secret=nobody.secret)
    )
    assert outsider.resource_graph().resources(query).data == []
    emulator.state.grant_role(nobody.object_id, "Reader", f"/subscriptions/{sub}")
    rows = outsider.resource_graph().resources(query).data
    assert sorted(r["name"] for r in rows) == ["id-rg-a", "id-rg-b"]
