"""The key store steps (Key Vault today, see byok.key_store): create or validate the vault,
create or reuse the key, make a new version once per rotation, grant or revoke an identity's
use of the keys, find the store of a key id, put the vault behind its firewall."""

from __future__ import annotations

import uuid
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.mgmt.core.tools import parse_resource_id, resource_id
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
from prefect.runtime import flow_run

from blocks.azure import AzureCredentials
from byok.azure_errors import (
    is_azure_error,
    is_lost_answer,
    is_propagation_delay,
    named_failure,
    or_none,
)
from byok.errors import OperationFailed, VerificationFailed
from byok.key_policy import RotationPolicySpec
from byok.key_store import (
    CRYPTO_OFFICER,
    CRYPTO_SERVICE_ENCRYPTION_USER,
    OPERATOR_KEY_PERMISSIONS,
    READER,
    SERVICE_KEY_PERMISSIONS,
    KeyInfo,
    KeyStore,
    VaultInfo,
)
from byok.keyvault_ids import KeyId
from byok.polling import read_settled
from byok.retrying import retry_while, write_or_find
from byok.rotation import ROTATION_TAG
from byok.sdk_values import text
from byok.tokens import object_id
from byok.validation import InvalidRequest, check_rsa_key_size, same_region
from clients.azure import AzureClients
from tasks.retry import STEP_RETRIES


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


def _group(vault: VaultInfo) -> str:
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
    with named_failure(vault.id, f"granting {principal_id} key access"):
        _update_policy(clients, group, current, principal_id, key_permissions, "add")


def assign_role(
    clients: AzureClients, scope: str, principal_id: str, role_id: str, timeout_seconds: float
) -> None:
    """Assign a built-in role at `scope` unless the principal already has it there.
    A re-sent assignment refused as existing (409 RoleAssignmentExists or
    RoleAssignmentUpdateNotPermitted) is success when the principal holds the role there."""
    if _role_assignments(clients, scope, principal_id, role_id):
        return
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
            on_retry=_log_retry("role assignment"),
        )

    with named_failure(scope, f"assigning role {role_id} to {principal_id}", waited=True):
        write_or_find(
            create,
            lambda: _role_assignments(clients, scope, principal_id, role_id) or None,
            is_lost_answer,
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
    protection; make sure this tool may manage its keys. A vault whose creation ended Failed
    is re-submitted as it is, once; still Failed, the step fails naming it."""
    clients = AzureClients.of(credentials, subscription_id)
    vault_id = resource_id(
        subscription=clients.subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.KeyVault",
        type="vaults",
        name=name,
    )
    with named_failure(vault_id, "key vault creation"):
        vault = _ensure_vault(clients, resource_group, name, location, rbac_for_new)
    info = vault_info(vault)
    me = object_id(clients.credential, clients.endpoints.arm_scope)
    grant(clients, info, me, OPERATOR_KEY_PERMISSIONS, CRYPTO_OFFICER, timeout_seconds)
    return info


def _vault_state(vault: Vault) -> str | None:
    state = vault.properties.provisioning_state
    return text(state) if state else None


def _ensure_vault(
    clients: AzureClients, resource_group: str, name: str, location: str, rbac_for_new: bool
) -> Vault:
    vaults = clients.keyvault_management().vaults

    def settled() -> Vault | None:
        return read_settled(
            lambda: read_vault(clients, resource_group, name),
            _vault_state,
            timeout_seconds=600,
            interval_seconds=clients.block.polling_interval_seconds,
            what=f"Key vault {name}",
        )

    vault = settled()
    if vault is not None and _vault_state(vault) == "Failed":
        get_run_logger().warning(
            "Key vault %s: its creation ended Failed; re-submitting it as it is", name
        )
        again = VaultCreateOrUpdateParameters(
            location=str(vault.location), properties=vault.properties, tags=vault.tags
        )
        vault = vaults.begin_create_or_update(resource_group, name, again).result()
    if vault is not None:
        check_existing_vault(vault, location)
    else:
        credentials = clients.block
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
        body = VaultCreateOrUpdateParameters(
            location=location,
            properties=VaultProperties(
                tenant_id=str(credentials.tenant_id),
                sku=Sku(family="A", name="standard"),
                enable_soft_delete=True,
                enable_purge_protection=True,
                enable_rbac_authorization=rbac_for_new,
                access_policies=policies,
            ),
        )
        vault = write_or_find(
            lambda: vaults.begin_create_or_update(resource_group, name, body).result(),
            settled,
            is_azure_error,
        )
        get_run_logger().info(
            "Created key vault %s (%s)", name, "RBAC" if rbac_for_new else "access policies"
        )
    if _vault_state(vault) == "Failed":
        raise OperationFailed(str(vault.id), "key vault creation ended Failed")
    return vault


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
    clients = AzureClients.of(credentials, subscription_id)

    def get_or_create() -> KeyInfo:
        key = read_key(clients, vault.url, name)
        if key is not None:
            return key_info(key, check_existing_key(key))
        created = write_or_find(
            lambda: clients.keys(vault.url).create_rsa_key(name, size=size),
            lambda: read_key(clients, vault.url, name),
            is_azure_error,
        )
        get_run_logger().info("Created RSA %d key %s", size, created.id)
        return key_info(created, check_existing_key(created))

    with named_failure(f"{vault.url}/keys/{name}", "key creation", waited=True):
        return retry_while(
            get_or_create,
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=_log_retry(f"key {name}"),
        )


def _made_for(keys: KeyClient, in_use: KeyId, rotation: str) -> str | None:
    """The version made for `rotation` (tagged), else a version newer than the one in use
    (made by an earlier run that stopped before its dependent took it), else None."""
    for props in keys.list_properties_of_key_versions(in_use.name):
        if (props.tags or {}).get(ROTATION_TAG) == rotation:
            return str(props.id)
    latest = KeyId.parse(str(keys.get_key(in_use.name).id))
    return None if latest.version == in_use.version else latest.versioned


@task(name="Create a new key version", **STEP_RETRIES)
def new_key_version(
    credentials: AzureCredentials,
    subscription_id: str | None,
    in_use: str,
    rotation_id: str | None = None,
) -> str:
    """A new version of the key whose version `in_use` is, made once per rotation: a re-run
    reuses the version tagged with `rotation_id` (default: this flow run's id) or any version
    newer than `in_use`; a create whose answer was lost is looked up, not sent again. Returns
    the new versioned key id."""
    kid = KeyId.parse(in_use)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    rotation = rotation_id or str(flow_run.id)
    with named_failure(kid.versionless, "new key version"):
        found = _made_for(keys, kid, rotation)
        if found is not None:
            get_run_logger().info("Reusing the new key version %s", found)
            return found
        current = keys.get_key(kid.name, kid.version)
        size = len(getattr(current.key, "n", None) or b"") * 8
        # tags live on versions: carry the current one's over, so selections by tag still match
        tags = {**(current.properties.tags or {}), ROTATION_TAG: rotation}
        made = write_or_find(
            lambda: str(keys.create_rsa_key(kid.name, size=size, tags=tags).id),
            lambda: _made_for(keys, kid, rotation),
            is_azure_error,
        )
    get_run_logger().info("New key version %s", made)
    return made


@task(name="Set the key rotation policy", **STEP_RETRIES)
def ensure_rotation_policy(
    credentials: AzureCredentials,
    subscription_id: str | None,
    key_id: str,
    policy: RotationPolicySpec,
) -> None:
    """The key's rotation policy becomes `policy` (a PUT, sent only when it differs), then
    read back and compared."""
    kid = KeyId.parse(key_id)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    with named_failure(kid.versionless, "setting the rotation policy"):
        if not policy.matches(keys.get_key_rotation_policy(kid.name)):
            keys.update_key_rotation_policy(kid.name, policy.to_sdk())
            get_run_logger().info("Rotation policy of %s set", kid.versionless)
        if not policy.matches(keys.get_key_rotation_policy(kid.name)):
            raise VerificationFailed(kid.versionless, "the rotation policy read back differs")


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
    group = _group(vault)
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


@task(name="Check the key vault and key", **STEP_RETRIES)
def check_key_vault(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    vault_name: str,
    key_name: str,
    location: str,
    access_policies: bool = False,
) -> None:
    """Read-only, before any write: an existing vault has soft delete and purge protection on
    and is in `location`, its key (when this tool may read it yet) is an enabled RSA key of
    an accepted size; with `access_policies`, the vault must not use Azure RBAC."""
    clients = AzureClients.of(credentials, subscription_id)
    check_vault_and_key(clients, resource_group, vault_name, key_name, location)
    vault = read_vault(clients, resource_group, vault_name) if access_policies else None
    if vault is not None and vault.properties.enable_rbac_authorization:
        raise InvalidRequest(
            "vault_name",
            vault_name,
            "the template grants access with an access policy; this vault uses Azure RBAC",
        )


@task(name="Read the key vault", **STEP_RETRIES)
def require_vault(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, name: str
) -> KeyStore:
    """An existing vault with soft delete and purge protection (InvalidRequest naming
    `vault_name` otherwise)."""
    found = read_vault(AzureClients.of(credentials, subscription_id), resource_group, name)
    if found is None:
        raise InvalidRequest(
            "vault_name", name, f"no such vault in resource group {resource_group}"
        )
    check_existing_vault(found)
    return vault_info(found)


@task(name="Find the key's vault", **STEP_RETRIES)
def find_key_store(
    credentials: AzureCredentials, subscription_id: str | None, key_id: str
) -> KeyStore:
    """The store serving a key id (InvalidRequest when none of the subscription does)."""
    return vault_for_key(AzureClients.of(credentials, subscription_id), key_id)


@task(name="Enable key vault access", **STEP_RETRIES)
def grant_key_use(
    credentials: AzureCredentials,
    subscription_id: str | None,
    store: KeyStore,
    principal_id: str,
    timeout_seconds: float,
    reader: bool = False,
) -> None:
    """Let a service's identity use the store's keys: get, wrapKey, unwrapKey by access
    policy, or Key Vault Crypto Service Encryption User on RBAC vaults (decided from the
    vault); `reader` adds Reader on the vault, as the AKS doc asks."""
    clients = AzureClients.of(credentials, subscription_id)
    grant(
        clients,
        store,
        principal_id,
        SERVICE_KEY_PERMISSIONS,
        CRYPTO_SERVICE_ENCRYPTION_USER,
        timeout_seconds,
    )
    if reader:
        assign_role(clients, store.id, principal_id, READER, timeout_seconds)
    get_run_logger().info(
        "%s may use the keys of %s%s", principal_id, store.name, " and read it" if reader else ""
    )


@task(name="Revoke key access")
def revoke_key_use(
    credentials: AzureCredentials, subscription_id: str | None, store: KeyStore, principal_id: str
) -> int:
    """`az keyvault delete-policy --object-id …` (or the role assignment on RBAC vaults).
    Returns how many grants were removed."""
    return revoke(
        AzureClients.of(credentials, subscription_id),
        store,
        principal_id,
        SERVICE_KEY_PERMISSIONS,
        CRYPTO_SERVICE_ENCRYPTION_USER,
    )


@task(name="Verify the old key version stays enabled", **STEP_RETRIES)
def verify_version_enabled(
    credentials: AzureCredentials, subscription_id: str | None, versioned_key_id: str
) -> None:
    """Rotation must not disable the previous version (data wrapped with it stays readable)."""
    kid = KeyId.parse(versioned_key_id)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    if not keys.get_key(kid.name, kid.version).properties.enabled:
        raise VerificationFailed(versioned_key_id, "the previous key version is disabled")


@task(name="Enable key vault bypass", retries=2, retry_delay_seconds=1)
def allow_trusted_services(
    credentials: AzureCredentials, subscription_id: str | None, store: KeyStore, ips: list[str]
) -> bool:
    """Deny by default, allow trusted Microsoft services (ACR is one) and the operator."""
    return set_network_rules(AzureClients.of(credentials, subscription_id), store, True, ips)
