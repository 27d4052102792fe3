"""Key Vault steps shared by the procedures: create or validate the vault, create or reuse
the key, grant an identity access to keys."""

from __future__ import annotations

import uuid
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyVaultKey
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    IPRule,
    NetworkRuleSet,
    Permissions,
    Sku,
    Vault,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultCreateOrUpdateParameters,
    VaultPatchParameters,
    VaultPatchProperties,
    VaultProperties,
)
from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks.azure import AzureCredentials
from byok.azure_errors import is_propagation_delay, or_none
from byok.keyvault_ids import KeyId
from byok.retrying import retry_while
from byok.sdk_values import text
from byok.tokens import object_id
from byok.validation import InvalidRequest, check_rsa_key_size, same_region
from clients.azure import AzureClients
from tasks.retry import STEP_RETRIES

CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
# What this tool needs on keys of the vaults it manages.
OPERATOR_KEY_PERMISSIONS = [
    "get",
    "list",
    "create",
    "update",
    "import",
    "rotate",
    "delete",
    "recover",
    "getrotationpolicy",
    "setrotationpolicy",
]
SERVICE_KEY_PERMISSIONS = ["get", "wrapKey", "unwrapKey"]


class VaultInfo(BaseModel):
    """A key vault as the steps after it need it."""

    id: str
    name: str
    url: str
    location: str
    rbac: bool


class KeyInfo(BaseModel):
    """A key: its versioned and versionless ids."""

    id: str
    versionless_id: str
    name: str
    version: str
    size: int


def read_vault(clients: AzureClients, resource_group: str, name: str) -> Vault | None:
    """The vault, or None when it does not exist."""
    return or_none(lambda: clients.keyvault_management().vaults.get(resource_group, name))


def check_existing_vault(vault: Vault, location: str | None = None) -> None:
    """An existing vault must have soft delete and purge protection on (and be in
    `location` when given); InvalidRequest otherwise."""
    props = vault.properties
    for field, on in (
        ("enable_soft_delete", props.enable_soft_delete),
        ("enable_purge_protection", props.enable_purge_protection),
    ):
        if not on:
            raise InvalidRequest(
                f"vault '{vault.name}' {field}",
                on,
                "customer-managed keys need a vault with soft delete and purge protection on; "
                f"turn it on (az keyvault update --name {vault.name} "
                "--enable-purge-protection true) or use another vault",
            )
    if location:
        same_region("location", location, str(vault.location), f"key vault '{vault.name}'")


def vault_info(vault: Vault) -> VaultInfo:
    """The parts of a vault later steps use."""
    return VaultInfo(
        id=str(vault.id),
        name=str(vault.name),
        url=str(vault.properties.vault_uri).rstrip("/"),
        location=str(vault.location),
        rbac=bool(vault.properties.enable_rbac_authorization),
    )


def check_existing_key(key: KeyVaultKey, field: str = "key_name") -> int:
    """An existing key must be an enabled RSA key of an accepted size; returns its size."""
    kty = text(key.key_type)
    if not kty.upper().startswith("RSA"):
        raise InvalidRequest(
            field, key.name, f"the key is {kty}; only RSA keys can be used (EC keys are refused)"
        )
    size = len(getattr(key.key, "n", None) or b"") * 8
    check_rsa_key_size(f"{field} '{key.name}' size", size)
    if not key.properties.enabled:
        raise InvalidRequest(field, key.name, "the key is disabled")
    return size


def read_key(clients: AzureClients, vault_url: str, name: str) -> KeyVaultKey | None:
    """The key's latest version, or None."""
    return or_none(lambda: clients.keys(vault_url).get_key(name))


def check_vault_and_key(
    clients: AzureClients,
    resource_group: str,
    vault_name: str,
    key_name: str,
    location: str | None = None,
) -> None:
    """Read-only checks of an existing vault (and its key, when this tool may read it yet)."""
    vault = read_vault(clients, resource_group, vault_name)
    if vault is None:
        return
    check_existing_vault(vault, location)
    try:
        key = read_key(clients, vault_info(vault).url, key_name)
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        get_run_logger().info(
            "No access to the keys of %s yet: the key is checked once access is granted", vault_name
        )
        return
    if key is not None:
        check_existing_key(key)


def key_info(key: KeyVaultKey, size: int) -> KeyInfo:
    """The ids later steps use."""
    kid = KeyId.parse(str(key.id))
    return KeyInfo(
        id=kid.versioned,
        versionless_id=kid.versionless,
        name=kid.name,
        version=str(kid.version),
        size=size,
    )


def _vault_policies(clients: AzureClients, vault: VaultInfo) -> tuple[str, Vault]:
    """The vault's resource group and its current state (access policies)."""
    group = vault.id.split("/")[4]
    return group, clients.keyvault_management().vaults.get(group, vault.name)


def _update_policy(
    clients: AzureClients,
    group: str,
    vault: Vault,
    principal_id: str,
    key_permissions: list[str],
    kind: str,
) -> None:
    """The accessPolicies/{add|remove} operation for one principal's key permissions."""
    entry = AccessPolicyEntry(
        tenant_id=str(vault.properties.tenant_id),
        object_id=principal_id,
        permissions=Permissions(keys_property=key_permissions),
    )
    clients.keyvault_management().vaults.update_access_policy(
        group,
        str(vault.name),
        kind,
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[entry])
        ),
    )


def _role_assignments(
    clients: AzureClients, scope: str, principal_id: str, role_id: str
) -> list[Any]:
    """The principal's assignments of `role_id` made at `scope` itself."""
    assignments = clients.authorization().role_assignments
    return [
        a
        for a in assignments.list_for_scope(scope, filter=f"principalId eq '{principal_id}'")
        if a.principal_id == principal_id
        and str(a.role_definition_id).rsplit("/", 1)[-1] == role_id
        and str(a.scope).lower() == scope.lower()
    ]


def grant(
    clients: AzureClients,
    vault: VaultInfo,
    principal_id: str,
    key_permissions: list[str],
    role_id: str,
    timeout_seconds: float,
) -> None:
    """Let a principal use keys: an access policy, or `role_id` on RBAC vaults. Idempotent;
    a principal the directory does not know yet is retried until `timeout_seconds`."""
    if vault.rbac:
        assign_role(clients, vault.id, principal_id, role_id, timeout_seconds)
        return
    group, current = _vault_policies(clients, vault)
    have = {
        p.lower()
        for policy in current.properties.access_policies or []
        if policy.object_id == principal_id
        for p in (policy.permissions.keys_property or [])
    }
    if {p.lower() for p in key_permissions} <= have or "all" in have:
        return
    _update_policy(clients, group, current, principal_id, key_permissions, "add")


def assign_role(
    clients: AzureClients, scope: str, principal_id: str, role_id: str, timeout_seconds: float
) -> None:
    """Assign a built-in role at `scope` unless the principal already has it there."""
    if _role_assignments(clients, scope, principal_id, role_id):
        return
    definition = f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{role_id}"
    retry_while(
        lambda: clients.authorization().role_assignments.create(
            scope,
            str(uuid.uuid4()),
            {
                "role_definition_id": definition,
                "principal_id": principal_id,
                "principal_type": "ServicePrincipal",
            },
        ),
        is_propagation_delay,
        timeout_seconds=timeout_seconds,
        first_delay=2,
        on_retry=_log_retry("role assignment"),
    )


def _log_retry(what: str) -> Any:
    def log(exc: Exception, wait: float) -> None:
        get_run_logger().info(
            "%s not possible yet (%s); retrying in %.1f s", what, type(exc).__name__, wait
        )

    return log


@task(name="Create key vault", **STEP_RETRIES)
def ensure_key_vault(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    location: str,
    rbac_for_new: bool,
    timeout_seconds: float,
) -> VaultInfo:
    """Get the vault (validated: soft delete and purge protection on) or create it with purge
    protection; make sure this tool may manage its keys."""
    clients = AzureClients(credentials, subscription_id)
    vault = read_vault(clients, resource_group, name)
    if vault is not None:
        check_existing_vault(vault, location)
    else:
        me = object_id(clients.credential, clients.endpoints.arm_scope)
        policies = (
            []
            if rbac_for_new
            else [
                AccessPolicyEntry(
                    tenant_id=str(credentials.tenant_id),
                    object_id=me,
                    permissions=Permissions(keys_property=OPERATOR_KEY_PERMISSIONS),
                )
            ]
        )
        vault = (
            clients.keyvault_management()
            .vaults.begin_create_or_update(
                resource_group,
                name,
                VaultCreateOrUpdateParameters(
                    location=location,
                    properties=VaultProperties(
                        tenant_id=str(credentials.tenant_id),
                        sku=Sku(family="A", name="standard"),
                        enable_soft_delete=True,
                        enable_purge_protection=True,
                        enable_rbac_authorization=rbac_for_new,
                        access_policies=policies,
                    ),
                ),
            )
            .result()
        )
        get_run_logger().info(
            "Created key vault %s (%s)", name, "RBAC" if rbac_for_new else "access policies"
        )
    info = vault_info(vault)
    me = object_id(clients.credential, clients.endpoints.arm_scope)
    grant(clients, info, me, OPERATOR_KEY_PERMISSIONS, CRYPTO_OFFICER, timeout_seconds)
    return info


@task(name="Create key", **STEP_RETRIES)
def ensure_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    vault: VaultInfo,
    name: str,
    size: int,
    timeout_seconds: float,
) -> KeyInfo:
    """Reuse the RSA key `name` (validated) or create it; a grant to this tool that has not
    propagated yet is waited for with bounded backoff."""
    clients = AzureClients(credentials, subscription_id)

    def get_or_create() -> KeyInfo:
        key = read_key(clients, vault.url, name)
        if key is not None:
            return key_info(key, check_existing_key(key))
        created = clients.keys(vault.url).create_rsa_key(name, size=size)
        get_run_logger().info("Created RSA %d key %s", size, created.id)
        return key_info(created, size)

    return retry_while(
        get_or_create,
        is_propagation_delay,
        timeout_seconds=timeout_seconds,
        first_delay=1,
        on_retry=_log_retry(f"key {name}"),
    )


def vault_for_key(clients: AzureClients, key_id: str) -> VaultInfo:
    """The vault a key id lives in (matched on the vault URI); InvalidRequest if none."""
    origin = KeyId.parse(key_id).vault_url.lower()
    for vault in clients.keyvault_management().vaults.list_by_subscription():
        if str(vault.properties.vault_uri).rstrip("/").lower() == origin:
            return vault_info(vault)
    raise InvalidRequest("key_id", key_id, "no key vault of this subscription serves this key")


def revoke(
    clients: AzureClients,
    vault: VaultInfo,
    principal_id: str,
    key_permissions: list[str],
    role_id: str,
) -> int:
    """Take a principal's key access away: its access policy permissions, or its `role_id`
    assignments on the vault (RBAC vaults). Returns how many grants were removed."""
    if vault.rbac:
        found = _role_assignments(clients, vault.id, principal_id, role_id)
        for assignment in found:
            clients.authorization().role_assignments.delete_by_id(str(assignment.id))
        return len(found)
    group, current = _vault_policies(clients, vault)
    if not any(p.object_id == principal_id for p in current.properties.access_policies or []):
        return 0
    _update_policy(clients, group, current, principal_id, key_permissions, "remove")
    return 1


def set_network_rules(
    clients: AzureClients, vault: VaultInfo, trusted_services: bool, ip_rules: list[str]
) -> bool:
    """Deny by default, letting trusted Azure services through when `trusted_services`, and
    the callers in `ip_rules`. Returns whether the vault changed."""
    group = vault.id.split("/")[4]
    vaults = clients.keyvault_management().vaults
    acls = vaults.get(group, vault.name).properties.network_acls
    bypass = "AzureServices" if trusted_services else "None"
    have = sorted(r.value for r in (acls.ip_rules or [])) if acls else []
    if acls and (text(acls.default_action), text(acls.bypass), have) == (
        "Deny",
        bypass,
        sorted(ip_rules),
    ):
        return False
    vaults.update(
        group,
        vault.name,
        VaultPatchParameters(
            properties=VaultPatchProperties(
                network_acls=NetworkRuleSet(
                    default_action="Deny",
                    bypass=bypass,
                    ip_rules=[IPRule(value=ip) for ip in ip_rules],
                )
            )
        ),
    )
    return True
