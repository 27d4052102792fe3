"""Managed HSM local RBAC: the built-in role definitions and the data action each key
operation needs. Roles, ids and permitted data actions as Microsoft publishes them
(https://learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles); definitions served
in the shape the data plane answers (id `Microsoft.KeyVault/providers/Microsoft.Authorization/
roleDefinitions/<guid>`, type `AKVBuiltInRole`: recorded answers in azure-sdk-for-js
sdk/keyvault/keyvault-admin/recordings/node/keyvaultaccesscontrolclient_tracing/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "Microsoft.KeyVault/managedHsm"
DEFINITION_PREFIX = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"

# Key Vault key operations (as the shared key routes name them) and the HSM data action each
# needs; an HSM has no access policies.
KEY_OPERATION_ACTIONS = {
    "get": "keys/read/action",
    "list": "keys/read/action",
    "getrotationpolicy": "keys/read/action",
    "create": "keys/create",
    "import": "keys/import/action",
    "update": "keys/write/action",
    "setrotationpolicy": "keys/write/action",
    "rotate": "keys/rotate/action",
    "delete": "keys/delete",
    "recover": "keys/deletedKeys/recover/action",
    "purge": "keys/deletedKeys/delete",
    "backup": "keys/backup/action",
    "restore": "keys/restore/action",
    "release": "keys/release/action",
    "encrypt": "keys/encrypt/action",
    "decrypt": "keys/decrypt/action",
    "wrapkey": "keys/wrap/action",
    "unwrapkey": "keys/unwrap/action",
    "sign": "keys/sign/action",
    "verify": "keys/verify/action",
}
_ROLE_MANAGEMENT = (
    "roleAssignments/read/action",
    "roleAssignments/write/action",
    "roleAssignments/delete/action",
    "roleDefinitions/read/action",
    "roleDefinitions/write/action",
    "roleDefinitions/delete/action",
)
_ROLE_READS = ("roleAssignments/read/action", "roleDefinitions/read/action")


@dataclass(frozen=True)
class HsmRole:
    """A built-in local role: id, name and data actions (without the managedHsm prefix)."""

    id: str
    name: str
    description: str
    data_actions: tuple[str, ...]

    @property
    def definition_id(self) -> str:
        """The id role assignments name it by."""
        return DEFINITION_PREFIX + self.id

    def to_json(self) -> dict[str, Any]:
        """The definition as the HSM serves it."""
        return {
            "id": self.definition_id,
            "name": self.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.name,
                "description": self.description,
                "type": "AKVBuiltInRole",
                "assignableScopes": ["/"],
                "permissions": [
                    {
                        "actions": [],
                        "notActions": [],
                        "dataActions": [f"{PREFIX}/{a}" for a in self.data_actions],
                        "notDataActions": [],
                    }
                ],
            },
        }


HSM_ROLES = {
    role.id: role
    for role in (
        HsmRole(
            "a290e904-7015-4bba-90c8-60543313cdb4",
            "Managed HSM Administrator",
            "Security domain, full backup and restore, and role management; no key management.",
            (
                "securitydomain/download/action",
                "securitydomain/download/read",
                "securitydomain/upload/action",
                "securitydomain/upload/read",
                "securitydomain/transferkey/read",
                *_ROLE_MANAGEMENT,
                "backup/start/action",
                "backup/status/action",
                "restore/start/action",
                "restore/status/action",
            ),
        ),
        HsmRole(
            "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
            "Managed HSM Crypto Officer",
            "Role management, purge or recover deleted keys, export keys.",
            (
                "keys/deletedKeys/read/action",
                "keys/deletedKeys/recover/action",
                "keys/deletedKeys/delete",
                *_ROLE_MANAGEMENT,
            ),
        ),
        HsmRole(
            "21dbd100-6940-42c2-9190-5d6cb909625b",
            "Managed HSM Crypto User",
            "All key management except purge or recover deleted keys and export keys.",
            (
                "keys/read/action",
                "keys/write/action",
                "keys/rotate/action",
                "keys/create",
                "keys/delete",
                "keys/backup/action",
                "keys/restore/action",
                "keys/release/action",
                "keys/import/action",
                "keys/encrypt/action",
                "keys/decrypt/action",
                "keys/wrap/action",
                "keys/unwrap/action",
                "keys/sign/action",
                "keys/verify/action",
                *_ROLE_READS,
            ),
        ),
        HsmRole(
            "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
            "Managed HSM Policy Administrator",
            "Create and delete role assignments.",
            _ROLE_MANAGEMENT,
        ),
        HsmRole(
            "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3",
            "Managed HSM Crypto Auditor",
            "Read (but not use) key attributes.",
            ("keys/read/action", "keys/deletedKeys/delete", "keys/backup/action", *_ROLE_READS),
        ),
        HsmRole(
            "33413926-3206-4cdd-b39a-83574fe37a17",
            "Managed HSM Crypto Service Encryption User",
            "Use a key for service encryption.",
            ("keys/read/action", "keys/wrap/action", "keys/unwrap/action"),
        ),
        HsmRole(
            "21dbd100-6940-42c2-9190-5d6cb909625c",
            "Managed HSM Crypto Service Release User",
            "Release a key to a trusted execution environment.",
            ("keys/release/action",),
        ),
        HsmRole(
            "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
            "Managed HSM Backup",
            "Single-key or whole-HSM backup.",
            ("backup/start/action", "backup/status/action", "keys/backup/action"),
        ),
        HsmRole(
            "6efe6056-5259-49d2-8b3d-d3d73544b20b",
            "Managed HSM Restore",
            "Single-key or whole-HSM restore.",
            ("restore/start/action", "restore/status/action", "keys/restore/action"),
        ),
    )
}
ADMINISTRATOR = "a290e904-7015-4bba-90c8-60543313cdb4"


def role_of(definition_id: str) -> HsmRole | None:
    """The built-in role a definition id (full or bare GUID) names, or None."""
    return HSM_ROLES.get(definition_id.rsplit("/", 1)[-1].lower())


def role_named(name: str) -> HsmRole:
    """A built-in role by its name (case-insensitive); KeyError otherwise."""
    for role in HSM_ROLES.values():
        if role.name.lower() == name.lower():
            return role
    raise KeyError(name)
