"""What a principal may do at a scope, from ARM's permissions list (`actions`/`notActions`
per role it holds there or above, wildcards allowed), checked before a flow's first write so
that a missing role is named instead of leaving a half-made resource behind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

# The ARM actions the flows' writes need (a role grants them by pattern, e.g. Contributor's "*")
RESOURCE_GROUP_WRITE = "Microsoft.Resources/subscriptions/resourceGroups/write"
VAULT_WRITE = "Microsoft.KeyVault/vaults/write"
DES_WRITE = "Microsoft.Compute/diskEncryptionSets/write"
ROLE_ASSIGNMENT_WRITE = "Microsoft.Authorization/roleAssignments/write"
IDENTITY_WRITE = "Microsoft.ManagedIdentity/userAssignedIdentities/write"
REGISTRY_WRITE = "Microsoft.ContainerRegistry/registries/write"


def _matches(patterns: Iterable[str], action: str) -> bool:
    return any(fnmatchcase(action.lower(), p.lower()) for p in patterns)


def allowed(permissions: Iterable[Mapping[str, Any]], action: str) -> bool:
    """Whether one of the permission entries grants `action` (and does not exclude it)."""
    return any(
        _matches(p.get("actions") or [], action) and not _matches(p.get("notActions") or [], action)
        for p in permissions
    )


def missing(permissions: Iterable[Mapping[str, Any]], wanted: Iterable[str]) -> list[str]:
    """The wanted actions none of the entries grants."""
    entries = list(permissions)
    return [action for action in wanted if not allowed(entries, action)]
