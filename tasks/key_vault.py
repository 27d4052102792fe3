"""The key store steps (a Key Vault vault or a managed HSM, see byok.key_store): create or
validate the vault, adopt an activated HSM, create or reuse the key, make a new version once
per rotation, grant or revoke an identity's use of the keys, find the store of a key id, put
the vault behind its firewall. What they do through the SDKs is in clients.key_store_access."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError
from azure.mgmt.core.tools import resource_id
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    Sku,
    Vault,
    VaultCreateOrUpdateParameters,
    VaultProperties,
)
from prefect import get_run_logger, task
from prefect.runtime import flow_run

from blocks.azure import AzureCredentials
from byok.azure_errors import is_azure_error, is_propagation_delay, named_failure
from byok.errors import OperationFailed, VerificationFailed
from byok.key_policy import RotationPolicySpec
from byok.key_sources import ChoosesKeyStore
from byok.key_store import (
    CRYPTO_OFFICER,
    CRYPTO_SERVICE_ENCRYPTION_USER,
    OPERATOR_KEY_PERMISSIONS,
    READER,
    SERVICE_KEY_PERMISSIONS,
    HsmInfo,
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
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from clients.key_store_access import (
    assign_role,
    check_existing_hsm,
    check_existing_key,
    check_existing_vault,
    check_hsm_operator,
    check_vault_and_key,
    grant,
    holds_key_use,
    hsm_info,
    key_info,
    log_retry,
    read_hsm,
    read_key,
    read_vault,
    revoke,
    set_network_rules,
    vault_for_key,
    vault_info,
    version_made_for,
)
from tasks.outcomes import planned, report
from tasks.retry import STEP_RETRIES


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
        vault, verb = _ensure_vault(clients, resource_group, name, location, rbac_for_new)
    info = vault_info(vault)
    report(info.id, verb, note="RBAC" if info.rbac else "access policies")
    me = object_id(clients.credential, clients.endpoints.arm_scope)
    if grant(clients, info, me, OPERATOR_KEY_PERMISSIONS, CRYPTO_OFFICER, timeout_seconds):
        report(info.id, "grant", note="this tool may manage its keys")
    return info


def _vault_state(vault: Vault) -> str | None:
    state = vault.properties.provisioning_state
    return text(state) if state else None


def _ensure_vault(
    clients: AzureClients, resource_group: str, name: str, location: str, rbac_for_new: bool
) -> tuple[Vault, str | None]:
    """The vault and what was done: created, updated (a Failed one re-submitted) or None."""
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
    verb = None
    if vault is not None and _vault_state(vault) == "Failed":
        get_run_logger().warning(
            "Key vault %s: its creation ended Failed; re-submitting it as it is", name
        )
        again = VaultCreateOrUpdateParameters(
            location=str(vault.location), properties=vault.properties, tags=vault.tags
        )
        vault = vaults.begin_create_or_update(resource_group, name, again).result()
        verb = "update"
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
        verb = "create"
    if _vault_state(vault) == "Failed":
        raise OperationFailed(str(vault.id), "key vault creation ended Failed")
    return vault, verb


@task(name="Create key", **STEP_RETRIES)
def ensure_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    vault: KeyStore,
    name: str,
    size: int,
    timeout_seconds: float,
) -> KeyInfo:
    """Reuse the RSA key `name` (validated) or create it (RSA-HSM in a managed HSM, which
    holds HSM-protected keys only); a grant to this tool that has not propagated yet is
    waited for with bounded backoff."""
    clients = AzureClients.of(credentials, subscription_id)
    hsm = isinstance(vault, HsmInfo)

    def get_or_create() -> KeyInfo:
        key = read_key(clients, vault.url, name)
        if key is not None:
            report(str(key.id), None)
            return key_info(key, check_existing_key(key))
        created = write_or_find(
            lambda: clients.keys(vault.url).create_rsa_key(name, size=size, hardware_protected=hsm),
            lambda: read_key(clients, vault.url, name),
            is_azure_error,
        )
        report(str(created.id), "create", note=f"{text(created.key_type)} {size}")
        return key_info(created, check_existing_key(created))

    with named_failure(f"{vault.url}/keys/{name}", "key creation", waited=True):
        return retry_while(
            get_or_create,
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=log_retry(f"key {name}"),
        )


@task(name="Create a new key version", **STEP_RETRIES)
def new_key_version(
    credentials: AzureCredentials,
    subscription_id: str | None,
    in_use: str,
    rotation_id: str | None = None,
) -> str:
    """A new version of the key whose version `in_use` is, like it (HSM protection,
    exportability and release policy carried over: a confidential-VM set refuses a version
    without them), made once per rotation: a re-run reuses the version tagged with
    `rotation_id` (default: this flow run's id) or any version newer than `in_use`; a create
    whose answer was lost is looked up, not sent again. Returns the new versioned key id."""
    kid = KeyId.parse(in_use)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    rotation = rotation_id or str(flow_run.id)
    with named_failure(kid.versionless, "new key version"):
        found = version_made_for(keys, kid, rotation)
        if found is not None:
            report(found, None, note="made for this rotation before")
            return found
        current = keys.get_key(kid.name, kid.version)
        size = len(getattr(current.key, "n", None) or b"") * 8
        # an HSM-protected key stays one (a managed HSM holds no other kind)
        hsm = text(current.key_type).upper().endswith("-HSM")
        # tags live on versions: carry the current one's over, so selections by tag still match
        tags = {**(current.properties.tags or {}), ROTATION_TAG: rotation}
        exportable = bool(current.properties.exportable)
        made = write_or_find(
            lambda: str(
                keys.create_rsa_key(
                    kid.name,
                    size=size,
                    tags=tags,
                    hardware_protected=hsm,
                    exportable=exportable or None,
                    release_policy=current.properties.release_policy if exportable else None,
                ).id
            ),
            lambda: version_made_for(keys, kid, rotation),
            is_azure_error,
        )
    report(made, "create")
    return made


@task(name="Plan the new key version", **STEP_RETRIES)
def plan_new_key_version(
    credentials: AzureCredentials, subscription_id: str | None, in_use: str, rotation_id: str
) -> str:
    """What `new_key_version` would do, from reads only. Returns the version it would give
    (`…/(new version)` when it would make one)."""
    kid = KeyId.parse(in_use)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    made = version_made_for(keys, kid, rotation_id)
    report(
        made or kid.versionless,
        None if made else "create",
        step="Create a new key version",
        note="made by an earlier run" if made else "",
        planned=True,
    )
    return made or f"{kid.versionless}/(new version)"


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
        current = keys.get_key_rotation_policy(kid.name)
        if policy.matches(current):
            report(kid.versionless, None)
        else:
            keys.update_key_rotation_policy(kid.name, policy.to_sdk())
            report(kid.versionless, "update", changes=policy.changes_from(current))
        if not policy.matches(keys.get_key_rotation_policy(kid.name)):
            raise VerificationFailed(kid.versionless, "the rotation policy read back differs")


@task(name="Plan the key vault", **STEP_RETRIES)
def plan_key_vault(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, name: str
) -> VaultInfo | None:
    """The rows of `ensure_key_vault` (would create, or would grant this tool key access);
    the vault, when it exists."""
    clients = AzureClients.of(credentials, subscription_id)
    vault = read_vault(clients, resource_group, name)
    where = resource_id(
        subscription=clients.subscription_id,
        resource_group=resource_group,
        namespace="Microsoft.KeyVault",
        type="vaults",
        name=name,
    )
    planned(ensure_key_vault, where, None if vault else "create")
    if vault is None:
        return None
    store = vault_info(vault)
    me = object_id(clients.credential, clients.endpoints.arm_scope)
    if not holds_key_use(clients, store, me, OPERATOR_KEY_PERMISSIONS, CRYPTO_OFFICER):
        planned(ensure_key_vault, store.id, "grant", "this tool's keys")
    return store


@task(name="Plan the key", **STEP_RETRIES)
def plan_key(
    credentials: AzureCredentials, subscription_id: str | None, store: KeyStore | None, name: str
) -> KeyId | None:
    """The row of `ensure_key` for key `name` of `store` (None: a vault to be made); the
    key's id, None when it would be made (or this tool may not read it yet)."""
    clients = AzureClients.of(credentials, subscription_id)
    try:
        key = read_key(clients, store.url, name) if store else None
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        key = None
    where = f"{store.url if store else 'the new vault'}/keys/{name}"
    planned(ensure_key, str(key.id) if key else where, None if key else "create")
    return KeyId.parse(str(key.id)) if key else None


@task(name="Plan the rotation policy", **STEP_RETRIES)
def plan_rotation_policy(
    credentials: AzureCredentials,
    subscription_id: str | None,
    key: KeyId | None,
    name: str,
    policy: RotationPolicySpec,
) -> None:
    """The row of `ensure_rotation_policy` for `key` (None: a key to be made, named `name`)."""
    keys = AzureClients.of(credentials, subscription_id).keys(key.vault_url) if key else None
    current = keys.get_key_rotation_policy(key.name) if keys and key else None
    diff = policy.changes_from(current) if current else []
    verb = "update" if diff or current is None else None
    where = key.versionless if key else name
    report(where, verb, step=ensure_rotation_policy.name, changes=diff, planned=True)


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


def _adopted_hsm(
    clients: AzureClients, resource_group: str, name: str, location: str, key_name: str
) -> HsmInfo:
    """An existing managed HSM (this tool adopts one, it never creates one), activated, in
    `location`, where this tool may create keys and assign roles at `key_name`'s scope
    (InvalidRequest naming `hsm_name` otherwise)."""
    found = read_hsm(clients, resource_group, name)
    if found is None:
        raise InvalidRequest(
            "hsm_name", name, f"no such managed HSM in resource group {resource_group}"
        )
    check_existing_hsm(found, location)
    store = hsm_info(found, key_name)
    check_hsm_operator(clients, store, key_name)
    report(store.id, "adopt", note="activated")
    return store


@task(name="Check the key store", **STEP_RETRIES)
def check_key_store(credentials: AzureCredentials, request: ChoosesKeyStore) -> HsmInfo | None:
    """Read-only, before any write, the store the request chose: its managed HSM, returned
    (see `_adopted_hsm`), or its vault when it exists (as `check_key_vault`
    checks it; None: the vault is made or adopted by `ensure_key_vault`)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    if request.key_store == "managed-hsm":
        hsm, key = str(request.hsm_name), request.key_name
        return _adopted_hsm(clients, request.hsm_group, hsm, request.location, key)
    vault = str(request.vault_name)
    check_vault_and_key(clients, request.resource_group, vault, request.key_name, request.location)
    return None


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
    key_name: str | None = None,
) -> None:
    """Let a service's identity use the store's keys: get, wrapKey, unwrapKey by access
    policy, or Key Vault Crypto Service Encryption User on RBAC vaults (decided from the
    vault), or on a managed HSM Managed HSM Crypto Service Encryption User at the scope of
    key `key_name`; `reader` adds Reader on the vault, as the AKS doc asks."""
    clients = AzureClients.of(credentials, subscription_id)
    granted = grant(
        clients,
        store,
        principal_id,
        SERVICE_KEY_PERMISSIONS,
        CRYPTO_SERVICE_ENCRYPTION_USER,
        timeout_seconds,
        key_name,
    )
    report(store.id, "grant" if granted else None, note=f"key use by {principal_id}")
    if reader:
        read = assign_role(clients, store.id, principal_id, READER, timeout_seconds)
        report(store.id, "grant" if read else None, note=f"Reader for {principal_id}")


@task(name="Revoke key access")
def revoke_key_use(
    credentials: AzureCredentials,
    subscription_id: str | None,
    store: KeyStore,
    principal_id: str,
    key_name: str | None = None,
) -> int:
    """`az keyvault delete-policy --object-id …` (or the role assignment on RBAC vaults, or
    the local role at key `key_name`'s scope on a managed HSM). Returns how many grants were
    removed."""
    removed = revoke(
        AzureClients.of(credentials, subscription_id),
        store,
        principal_id,
        SERVICE_KEY_PERMISSIONS,
        CRYPTO_SERVICE_ENCRYPTION_USER,
        key_name,
    )
    report(store.id, "revoke" if removed else None, note=f"key use by {principal_id}")
    return removed


@task(name="Verify the old key version stays enabled", **STEP_RETRIES)
def verify_version_enabled(
    credentials: AzureCredentials, subscription_id: str | None, versioned_key_id: str
) -> None:
    """Rotation must not disable the previous version (data wrapped with it stays readable)."""
    kid = KeyId.parse(versioned_key_id)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    if not keys.get_key(kid.name, kid.version).properties.enabled:
        raise VerificationFailed(versioned_key_id, "the previous key version is disabled")
    report(versioned_key_id, "verify", note="enabled")


@task(name="Enable key vault bypass", retries=2, retry_delay_seconds=1)
def allow_trusted_services(
    credentials: AzureCredentials, subscription_id: str | None, store: KeyStore, ips: list[str]
) -> bool:
    """Deny by default, allow trusted Microsoft services (ACR is one) and the operator."""
    if not isinstance(store, VaultInfo):
        raise InvalidRequest("vault_name", store.name, "a managed HSM's firewall is not set here")
    changed = set_network_rules(AzureClients.of(credentials, subscription_id), store, True, ips)
    report(store.id, "update" if changed else None, note="firewall, trusted services bypass")
    return changed
