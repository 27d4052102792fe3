# mypy: disable-error-code="union-attr"
# (the SDK types every field Optional; an HSM Azure returns has them: see pyproject.toml)
"""What the key store steps do through the SDKs (Key Vault vaults and Managed HSMs): read and
check a vault, an HSM and a key, grant or revoke a principal's use of a store's keys (access
policies, Azure RBAC on vaults, the HSM's local RBAC at key scope), find the store serving a key
id, put a vault behind its firewall. The tasks of `tasks/key_vault.py` and the other task
modules call these."""

from __future__ import annotations

import uuid
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.keyvault.administration import KeyVaultAccessControlClient
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.mgmt.core.tools import parse_resource_id
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    IPRule,
    ManagedHsm,
    NetworkRuleSet,
    Permissions,
    Vault,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultPatchParameters,
    VaultPatchProperties,
)
from prefect import get_run_logger

from byok.azure_errors import (
    error_code,
    is_azure_error,
    is_lost_answer,
    is_propagation_delay,
    named_failure,
    or_none,
)
from byok.key_sources import check_hsm_activated
from byok.key_store import (
    CRYPTO_SERVICE_ENCRYPTION_USER,
    HSM_KEY_CREATORS,
    HSM_ROLE_ASSIGNERS,
    HSM_ROLE_DEFINITION,
    HSM_ROLE_OF,
    SERVICE_KEY_PERMISSIONS,
    HsmInfo,
    KeyInfo,
    KeyStore,
    VaultInfo,
)
from byok.keyvault_ids import KeyId
from byok.retrying import retry_while, write_or_find
from byok.rotation import ROTATION_TAG
from byok.sdk_values import text
from byok.tokens import object_id
from byok.validation import InvalidRequest, check_rsa_key_size, same_region
from clients.azure import AzureClients
from clients.context import shared


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


def _group(vault: KeyStore) -> str:
    return str(parse_resource_id(vault.id)["resource_group"])


def _vault_policies(clients: AzureClients, vault: VaultInfo) -> tuple[str, Vault]:
    """The vault's resource group and its current state (access policies)."""
    group = _group(vault)
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


def _holds(vault: Vault, principal_id: str, key_permissions: list[str]) -> bool:
    """Whether the vault's access policies give the principal these key permissions."""
    have = {
        p.lower()
        for policy in vault.properties.access_policies or []
        if policy.object_id == principal_id
        for p in (policy.permissions.keys_property or [])
    }
    return {p.lower() for p in key_permissions} <= have or "all" in have


def holds_role(clients: AzureClients, scope: str, principal_id: str, role_id: str) -> bool:
    """Whether the principal holds `role_id` assigned at `scope` itself (read only)."""
    return bool(_role_assignments(clients, scope, principal_id, role_id))


def holds_key_use(
    clients: AzureClients,
    vault: KeyStore,
    principal_id: str,
    key_permissions: list[str],
    role_id: str,
    key_name: str | None = None,
) -> bool:
    """Whether the principal already has what `grant` gives (read only)."""
    if isinstance(vault, HsmInfo):
        scope = hsm_key_scope(vault, key_name)
        rbac = hsm_access(clients, vault)
        return bool(_hsm_assignments(rbac, scope, principal_id, HSM_ROLE_OF[role_id]))
    if vault.rbac:
        return holds_role(clients, vault.id, principal_id, role_id)
    return _holds(_vault_policies(clients, vault)[1], principal_id, key_permissions)


def holds_service_key_use(
    clients: AzureClients,
    store: KeyStore | None,
    principal_id: str | None,
    key_name: str | None = None,
) -> bool:
    """Whether a service's identity (None: one to be made) already has the key use
    `grant_key_use` gives on `store` (None: a vault to be made)."""
    return (
        store is not None
        and principal_id is not None
        and holds_key_use(
            clients,
            store,
            principal_id,
            SERVICE_KEY_PERMISSIONS,
            CRYPTO_SERVICE_ENCRYPTION_USER,
            key_name,
        )
    )


def grant(
    clients: AzureClients,
    vault: KeyStore,
    principal_id: str,
    key_permissions: list[str],
    role_id: str,
    timeout_seconds: float,
    key_name: str | None = None,
) -> bool:
    """Let a principal use keys: an access policy, or `role_id` on RBAC vaults; on a managed
    HSM the matching local role at the scope of key `key_name`. Idempotent; a principal the
    directory does not know yet is retried until `timeout_seconds`. Whether it wrote."""
    if isinstance(vault, HsmInfo):
        return assign_hsm_role(
            clients, vault, hsm_key_scope(vault, key_name), principal_id, HSM_ROLE_OF[role_id]
        )
    if vault.rbac:
        return assign_role(clients, vault.id, principal_id, role_id, timeout_seconds)
    group, current = _vault_policies(clients, vault)
    if _holds(current, principal_id, key_permissions):
        return False
    with named_failure(vault.id, f"granting {principal_id} key access"):
        _update_policy(clients, group, current, principal_id, key_permissions, "add")
    return True


def assign_role(
    clients: AzureClients, scope: str, principal_id: str, role_id: str, timeout_seconds: float
) -> bool:
    """Assign a built-in role at `scope` unless the principal already has it there.
    A re-sent assignment refused as existing (409 RoleAssignmentExists or
    RoleAssignmentUpdateNotPermitted) is success when the principal holds the role there.
    Whether it wrote."""
    if _role_assignments(clients, scope, principal_id, role_id):
        return False
    definition = f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{role_id}"

    def create() -> object:
        return retry_while(
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
            on_retry=log_retry("role assignment"),
        )

    with named_failure(scope, f"assigning role {role_id} to {principal_id}", waited=True):
        write_or_find(
            create,
            lambda: _role_assignments(clients, scope, principal_id, role_id) or None,
            is_lost_answer,
        )
    return True


def version_made_for(keys: KeyClient, in_use: KeyId, rotation: str) -> str | None:
    """The version made for `rotation` (tagged), else a version newer than the one in use
    (made by an earlier run that stopped before its dependent took it), else None."""
    for props in keys.list_properties_of_key_versions(in_use.name):
        if (props.tags or {}).get(ROTATION_TAG) == rotation:
            return str(props.id)
    latest = KeyId.parse(str(keys.get_key(in_use.name).id))
    return None if latest.version == in_use.version else latest.versioned


def log_retry(what: str) -> Any:
    """A `retry_while` callback logging that `what` is retried (and why: the service's
    error code, else the exception's type) and when."""

    def log(exc: Exception, wait: float) -> None:
        why = error_code(exc) or type(exc).__name__
        get_run_logger().info("%s not possible yet (%s); retrying in %.1f s", what, why, wait)

    return log


def vault_for_key(clients: AzureClients, key_id: str) -> KeyStore:
    """The vault or managed HSM a key id lives in (matched on its data-plane URI);
    InvalidRequest if none of the subscription serves it."""
    origin = KeyId.parse(key_id).vault_url.lower()
    management = clients.keyvault_management()
    for vault in management.vaults.list_by_subscription():
        if str(vault.properties.vault_uri).rstrip("/").lower() == origin:
            return vault_info(vault)
    for hsm in management.managed_hsms.list_by_subscription():
        if str(hsm.properties.hsm_uri).rstrip("/").lower() == origin:
            return hsm_info(hsm, KeyId.parse(key_id).name)
    raise InvalidRequest(
        "key_id", key_id, "no key vault or managed HSM of this subscription serves this key"
    )


def revoke(
    clients: AzureClients,
    vault: KeyStore,
    principal_id: str,
    key_permissions: list[str],
    role_id: str,
    key_name: str | None = None,
) -> int:
    """Take a principal's key access away: its access policy permissions, or its `role_id`
    assignments on the vault (RBAC vaults), or on a managed HSM its matching local role at
    the key's scope. Returns how many grants were removed."""
    if isinstance(vault, HsmInfo):
        rbac = hsm_access(clients, vault)
        scope = hsm_key_scope(vault, key_name)
        found = _hsm_assignments(rbac, scope, principal_id, HSM_ROLE_OF[role_id])
        for assignment in found:
            rbac.delete_role_assignment(scope, str(assignment.name))
        return len(found)
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


def network_rules_set(
    clients: AzureClients, vault: VaultInfo, trusted_services: bool, ip_rules: list[str]
) -> bool:
    """Whether the vault's firewall is as `set_network_rules` makes it already (read only)."""
    vaults = clients.keyvault_management().vaults
    acls = vaults.get(_group(vault), vault.name).properties.network_acls
    bypass = "AzureServices" if trusted_services else "None"
    have = sorted(r.value for r in (acls.ip_rules or [])) if acls else []
    return bool(acls) and (text(acls.default_action), text(acls.bypass), have) == (
        "Deny",
        bypass,
        sorted(ip_rules),
    )


def set_network_rules(
    clients: AzureClients, vault: VaultInfo, trusted_services: bool, ip_rules: list[str]
) -> bool:
    """Deny by default, letting trusted Azure services through when `trusted_services`, and
    the callers in `ip_rules`. Returns whether the vault changed."""
    if network_rules_set(clients, vault, trusted_services, ip_rules):
        return False
    bypass = "AzureServices" if trusted_services else "None"
    clients.keyvault_management().vaults.update(
        _group(vault),
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


# -- managed HSMs ------------------------------------------------------------------------
def read_hsm(clients: AzureClients, resource_group: str, name: str) -> ManagedHsm | None:
    """The managed HSM, or None when it does not exist."""
    return or_none(lambda: clients.keyvault_management().managed_hsms.get(resource_group, name))


def hsm_info(hsm: ManagedHsm, key_name: str | None = None) -> HsmInfo:
    """The parts of a managed HSM later steps use (for key `key_name`)."""
    return HsmInfo(
        id=str(hsm.id),
        name=str(hsm.name),
        url=str(hsm.properties.hsm_uri).rstrip("/"),
        location=str(hsm.location),
        key_name=key_name,
    )


def check_existing_hsm(hsm: ManagedHsm, location: str, field: str = "hsm_name") -> None:
    """An adopted HSM must be activated (its security domain downloaded) and in `location`
    (a disk encryption set's key is in its region); InvalidRequest otherwise."""
    domain = hsm.properties.security_domain_properties
    status = text(domain.activation_status) if domain and domain.activation_status else None
    check_hsm_activated(field, str(hsm.name), status)
    same_region("location", location, str(hsm.location), f"managed HSM '{hsm.name}'")


def hsm_access(clients: AzureClients, hsm: HsmInfo) -> KeyVaultAccessControlClient:
    """The HSM's local RBAC client, one per HSM and block in the process."""
    return shared(
        clients.block,
        "hsm-access-control",
        hsm.url.lower(),
        make=lambda: KeyVaultAccessControlClient(
            hsm.url,
            clients.credential,
            verify_challenge_resource=clients.block.verify_keyvault_challenge_resource,
            retry_policy=clients.retry_policy(),
            transport=clients.transport,
        ),
    )


def hsm_key_scope(hsm: HsmInfo, key_name: str | None) -> str:
    """The local RBAC scope of one key (`key_name`, else the key the store was found for):
    grants on an HSM are made per key
    (https://learn.microsoft.com/azure/key-vault/managed-hsm/role-management)."""
    name = key_name or hsm.key_name
    if not name:
        raise InvalidRequest("key_name", name, f"a grant on managed HSM '{hsm.name}' names its key")
    return f"/keys/{name}"


def check_hsm_operator(clients: AzureClients, hsm: HsmInfo, key_name: str) -> None:
    """Read-only: this tool holds, at `key_name`'s scope, a local role that creates keys and
    one that assigns roles (its HSM's administrators grant them: this tool never grants
    itself HSM roles); InvalidRequest naming `hsm_name` otherwise."""
    me = object_id(clients.credential, clients.endpoints.arm_scope)
    rbac = hsm_access(clients, hsm)
    scopes = ("/", "/keys", f"/keys/{key_name}")
    try:
        held = {
            str(a.properties.role_definition_id).rsplit("/", 1)[-1]
            for scope in scopes
            for a in rbac.list_role_assignments(scope)
            if a.properties is not None and a.properties.principal_id == me
        }
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        held = set()
    missing = [
        need
        for need, roles in (
            ("Managed HSM Crypto User (creates keys)", HSM_KEY_CREATORS),
            ("Managed HSM Crypto Officer (assigns roles)", HSM_ROLE_ASSIGNERS),
        )
        if not held & roles
    ]
    if missing:
        raise InvalidRequest(
            "hsm_name",
            hsm.name,
            f"this tool's principal {me} needs the local roles {' and '.join(missing)} at "
            f"scope / or /keys/{key_name}, granted by the HSM's administrators "
            f"(az keyvault role assignment create --hsm-name {hsm.name} ...)",
        )


def _hsm_assignments(
    rbac: KeyVaultAccessControlClient, scope: str, principal_id: str, role_id: str
) -> list[Any]:
    """The principal's assignments of local role `role_id` made at `scope` itself."""
    return [
        a
        for a in rbac.list_role_assignments(scope)
        if a.properties is not None
        and a.properties.principal_id == principal_id
        and str(a.properties.role_definition_id).rsplit("/", 1)[-1] == role_id
        and str(a.properties.scope).lower() == scope.lower()
    ]


def holds_hsm_role(
    clients: AzureClients, hsm: HsmInfo, scope: str, principal_id: str, role_id: str
) -> bool:
    """Whether the principal holds local role `role_id` at `scope` itself (read only)."""
    return bool(_hsm_assignments(hsm_access(clients, hsm), scope, principal_id, role_id))


def assign_hsm_role(
    clients: AzureClients, hsm: HsmInfo, scope: str, principal_id: str, role_id: str
) -> bool:
    """Assign a local role at `scope` unless the principal holds it there. The assignment's
    name is derived from what it grants, so a re-sent one is the same assignment; a lost
    answer is followed by a lookup. Whether it wrote."""
    rbac = hsm_access(clients, hsm)
    if _hsm_assignments(rbac, scope, principal_id, role_id):
        return False
    name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{hsm.id}{scope}|{principal_id}|{role_id}".lower()))
    with named_failure(hsm.id, f"assigning local role {role_id} at {scope} to {principal_id}"):
        write_or_find(
            lambda: rbac.create_role_assignment(
                scope, HSM_ROLE_DEFINITION + role_id, principal_id, name=name
            ),
            lambda: _hsm_assignments(rbac, scope, principal_id, role_id) or None,
            is_azure_error,
        )
    return True
