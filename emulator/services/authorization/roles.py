"""Azure built-in role definitions (actions, notActions, dataActions) and the pure rule
that decides whether role assignments allow an action at a scope.

Definitions as Azure publishes them:
https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
(general: Owner, Contributor, Reader, User Access Administrator; privileged: Role Based
Access Control Administrator; security: the Key Vault roles; identity: Managed Identity
Operator/Contributor). An assignment at a scope applies to that scope and every scope below
it; `*` in an action matches any characters; notActions and notDataActions subtract from the
role's own grants
(https://learn.microsoft.com/azure/role-based-access-control/role-definitions)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"
KV = "Microsoft.KeyVault/vaults"
_KEY_VAULT_READS = (
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
)
_IDENTITY_COMMON = (
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Support/*",
)
# Key Vault key operations (access-policy permission names) and the data action each needs.
KEY_DATA_ACTIONS = {
    "get": f"{KV}/keys/read",
    "list": f"{KV}/keys/read",
    "create": f"{KV}/keys/create/action",
    "import": f"{KV}/keys/import/action",
    "update": f"{KV}/keys/update/action",
    "delete": f"{KV}/keys/delete",
    "recover": f"{KV}/keys/recover/action",
    "backup": f"{KV}/keys/backup/action",
    "restore": f"{KV}/keys/restore/action",
    "purge": f"{KV}/keys/purge/action",
    "rotate": f"{KV}/keys/rotate/action",
    "getrotationpolicy": f"{KV}/keyrotationpolicies/read",
    "setrotationpolicy": f"{KV}/keyrotationpolicies/write",
    "encrypt": f"{KV}/keys/encrypt/action",
    "decrypt": f"{KV}/keys/decrypt/action",
    "wrapkey": f"{KV}/keys/wrap/action",
    "unwrapkey": f"{KV}/keys/unwrap/action",
    "sign": f"{KV}/keys/sign/action",
    "verify": f"{KV}/keys/verify/action",
    "release": f"{KV}/keys/release/action",
}
ALL_KEY_OPERATIONS = frozenset(KEY_DATA_ACTIONS)


@dataclass(frozen=True)
class RoleDefinition:
    """A built-in role: its id (a GUID), name and permissions."""

    id: str
    name: str
    description: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = field(default=())

    def permits(self, action: str, data: bool = False) -> bool:
        """Whether the role grants a control-plane action (or a data action)."""
        grants, denies = (
            (self.data_actions, self.not_data_actions) if data else (self.actions, self.not_actions)
        )
        return any(_matches(p, action) for p in grants) and not any(
            _matches(p, action) for p in denies
        )

    @property
    def key_operations(self) -> frozenset[str]:
        """The Key Vault key operations the role's data actions allow."""
        return frozenset(op for op, a in KEY_DATA_ACTIONS.items() if self.permits(a, data=True))

    def to_json(self, scope: str) -> dict[str, Any]:
        """The role definition as ARM serves it."""
        return {
            "id": f"{scope}/providers/{ROLE_DEFINITION_TYPE}/{self.id}",
            "name": self.id,
            "type": ROLE_DEFINITION_TYPE,
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [
                    {
                        "actions": list(self.actions),
                        "notActions": list(self.not_actions),
                        "dataActions": list(self.data_actions),
                        "notDataActions": list(self.not_data_actions),
                    }
                ],
            },
        }


@cache
def _pattern(permission: str) -> re.Pattern[str]:
    """`*` matches any characters; a whole `/*/` segment may also match none
    ('…/userAssignedIdentities/*/assign/action' grants '…/userAssignedIdentities/assign/action')."""
    regex = ".*".join(map(re.escape, permission.split("*"))).replace("/.*/", "(?:/.*)?/")
    return re.compile(regex, re.IGNORECASE)


def _matches(permission: str, action: str) -> bool:
    return _pattern(permission).fullmatch(action) is not None


BUILT_IN_ROLES = {
    role.id: role
    for role in (
        RoleDefinition(
            "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            "Owner",
            "Grants full access to manage all resources, including the ability to assign roles "
            "in Azure RBAC.",
            actions=("*",),
        ),
        RoleDefinition(
            "b24988ac-6180-42a0-ab88-20f7382dd24c",
            "Contributor",
            "Grants full access to manage all resources, but does not allow you to assign roles "
            "in Azure RBAC.",
            actions=("*",),
            not_actions=(
                "Microsoft.Authorization/*/Delete",
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/elevateAccess/Action",
                "Microsoft.Blueprint/blueprintAssignments/write",
                "Microsoft.Blueprint/blueprintAssignments/delete",
                "Microsoft.Compute/galleries/share/action",
                "Microsoft.Purview/consents/write",
                "Microsoft.Purview/consents/delete",
                "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
                "Microsoft.Subscription/cancel/action",
                "Microsoft.Subscription/enable/action",
            ),
        ),
        RoleDefinition(
            "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "Reader",
            "View all resources, but does not allow you to make any changes.",
            actions=("*/read",),
        ),
        RoleDefinition(
            "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
            "User Access Administrator",
            "Lets you manage user access to Azure resources.",
            actions=("*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"),
        ),
        # https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/privileged
        # (Role Based Access Control Administrator; served without its optional conditions)
        RoleDefinition(
            "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
            "Role Based Access Control Administrator",
            "Manage access to Azure resources by assigning roles using Azure RBAC. This role "
            "does not allow you to manage access using other ways, such as Azure Policy.",
            actions=(
                "Microsoft.Authorization/roleAssignments/write",
                "Microsoft.Authorization/roleAssignments/delete",
                "*/read",
                "Microsoft.Support/*",
            ),
        ),
        RoleDefinition(
            "00482a5a-887f-4fb3-b363-3b7fe8e74483",
            "Key Vault Administrator",
            "Perform all data plane operations on a key vault and all objects in it, including "
            "certificates, keys, and secrets. Cannot manage key vault resources or manage role "
            "assignments.",
            actions=_KEY_VAULT_READS,
            data_actions=(f"{KV}/*",),
        ),
        RoleDefinition(
            "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
            "Key Vault Crypto Officer",
            "Perform any action on the keys of a key vault, except manage permissions.",
            actions=_KEY_VAULT_READS,
            data_actions=(f"{KV}/keys/*", f"{KV}/keyrotationpolicies/*"),
        ),
        RoleDefinition(
            "e147488a-f6f5-4113-8e2d-b22465e65bf6",
            "Key Vault Crypto Service Encryption User",
            "Read metadata of keys and perform wrap/unwrap operations.",
            actions=(
                "Microsoft.EventGrid/eventSubscriptions/write",
                "Microsoft.EventGrid/eventSubscriptions/read",
                "Microsoft.EventGrid/eventSubscriptions/delete",
            ),
            data_actions=(f"{KV}/keys/read", f"{KV}/keys/wrap/action", f"{KV}/keys/unwrap/action"),
        ),
        # What a confidential VM's key is released to (the Confidential VM Orchestrator) on
        # an RBAC vault: the release data action only (built-in-roles/security, "Key Vault
        # Crypto Service Release User").
        RoleDefinition(
            "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
            "Key Vault Crypto Service Release User",
            "Release keys. Only works for key vaults that use the 'Azure role-based access "
            "control' permission model.",
            data_actions=(f"{KV}/keys/release/action",),
        ),
        RoleDefinition(
            "12338af0-0e69-4776-bea7-57ae8d297424",
            "Key Vault Crypto User",
            "Perform cryptographic operations using keys.",
            data_actions=tuple(
                f"{KV}/keys/{a}"
                for a in (
                    "read",
                    "update/action",
                    "backup/action",
                    "encrypt/action",
                    "decrypt/action",
                    "wrap/action",
                    "unwrap/action",
                    "sign/action",
                    "verify/action",
                )
            ),
        ),
        RoleDefinition(
            "21090545-7ca7-4776-b22c-e363652d74d2",
            "Key Vault Reader",
            "Read metadata of key vaults and its certificates, keys, and secrets.",
            actions=_KEY_VAULT_READS,
            data_actions=(f"{KV}/*/read", f"{KV}/secrets/readMetadata/action"),
        ),
        # Key Vault Contributor manages vaults, not their data nor managed HSMs; AKS KMS with a
        # private vault needs it for the cluster's identity (built-in-roles/security,
        # https://learn.microsoft.com/azure/aks/use-kms-etcd-encryption#private-key-vault).
        RoleDefinition(
            "f25e0fa2-a7c8-4377-a976-54943a77a395",
            "Key Vault Contributor",
            "Manage key vaults, but does not allow you to assign roles in Azure RBAC, and does "
            "not allow you to access secrets, keys, or certificates.",
            actions=(
                "Microsoft.Authorization/*/read",
                "Microsoft.Insights/alertRules/*",
                "Microsoft.KeyVault/*",
                "Microsoft.Resources/deployments/*",
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                "Microsoft.Support/*",
            ),
            not_actions=(
                "Microsoft.KeyVault/locations/deletedVaults/purge/action",
                "Microsoft.KeyVault/hsmPools/*",
                "Microsoft.KeyVault/managedHsms/*",
            ),
        ),
        # What reading a cluster's kubeconfig takes (built-in-roles/containers): Reader lacks
        # the listClusterUserCredential action.
        RoleDefinition(
            "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",
            "Azure Kubernetes Service Cluster User Role",
            "List cluster user credential action.",
            actions=(
                "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
                "Microsoft.ContainerService/managedClusters/read",
            ),
        ),
        RoleDefinition(
            "f1a07417-d97a-45cb-824c-7a7467783830",
            "Managed Identity Operator",
            "Read and Assign User Assigned Identity",
            actions=(
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
                *_IDENTITY_COMMON,
            ),
        ),
        RoleDefinition(
            "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
            "Managed Identity Contributor",
            "Create, Read, Update, and Delete User Assigned Identity",
            actions=(
                "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
                "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action",
                *_IDENTITY_COMMON,
            ),
        ),
    )
}


def role_by_definition_id(definition_id: str) -> RoleDefinition | None:
    """The built-in role whose id ends `definition_id` (a full id or a bare GUID)."""
    return BUILT_IN_ROLES.get(definition_id.rstrip("/").rsplit("/", 1)[-1].lower())


def in_scope(assigned_at: str, scope: str) -> bool:
    """Whether an assignment at `assigned_at` covers `scope` (the same or a scope below)."""
    above, below = assigned_at.lower().rstrip("/"), scope.lower().rstrip("/")
    return above == "" or below == above or below.startswith(above + "/")


def allowed(
    assignments: Iterable[dict[str, Any]],
    principal_id: str,
    action: str,
    scope: str,
    data: bool = False,
) -> bool:
    """Whether any of the principal's role assignments (`properties.principalId`, `.scope`,
    `.roleDefinitionId`) grants `action` (a data action when `data`) at `scope`."""
    for assignment in assignments:
        props = assignment["properties"]
        if props["principalId"] != principal_id or not in_scope(props["scope"], scope):
            continue
        role = role_by_definition_id(props["roleDefinitionId"])
        if role is not None and role.permits(action, data):
            return True
    return False
