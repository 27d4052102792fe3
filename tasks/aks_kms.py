"""KMS etcd encryption steps: the checks of a request, the identity's key access, the
cluster's `securityProfile.azureKeyVaultKms` (and the tags recording its key versions), and
every Secret re-written through the cluster's Kubernetes API so it is sealed with the current
key version."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.mgmt.core.tools import resource_id
from prefect import get_run_logger, task

from blocks.azure import AzureCredentials
from byok.aks_kms import (
    APPROVE_PRIVATE_ENDPOINT,
    KEY_VAULT_CONTRIBUTOR,
    KEY_VAULT_CRYPTO_USER,
    KMS_KEY_PERMISSIONS,
    KMS_KEY_STORE_RULE,
    PRIVATE_ENDPOINT_ROLES,
    TAG_CURRENT,
    TAG_PREVIOUS,
    TAG_ROTATION,
    EnableKmsRequest,
    KmsState,
    RotateKmsRequest,
    annotated,
    check_experience,
    check_key_type,
    check_kubernetes,
    check_network,
    experience_of,
    kms_changes,
    kms_of,
    needs_rewrite,
    next_tags,
    rotated_at,
    rotated_kms,
)
from byok.aks_models import cluster_id
from byok.azure_errors import or_none
from byok.errors import InvalidRequest, ResourceError, VerificationFailed
from byok.key_store import HsmInfo, VaultInfo
from byok.keyvault_ids import KeyId
from byok.outcomes import Change
from byok.retrying import retry_while
from byok.sdk_values import text
from byok.validation import region_key
from clients.aks_clusters import is_busy, read_cluster, settled_cluster, user_kubeconfig
from clients.aks_kubernetes import core_api, secrets
from clients.azure import AzureClients
from clients.key_store_access import (
    assign_role,
    grant,
    holds_key_use,
    holds_role,
    vault_for_key,
)
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES

# AKS's refusal while the identity's new key access propagates (MicrosoftDocs/azure-docs#98954)
KMS_ACCESS_CODE = "AzureKeyVaultKmsValidateIdentityPermissionCustomerError"
# Roles whose data actions include keys encrypt and decrypt (Key Vault Crypto User, Crypto
# Officer, Administrator): https://learn.microsoft.com/azure/key-vault/general/rbac-guide
KEY_ROLES = frozenset(
    {
        KEY_VAULT_CRYPTO_USER,
        "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    }
)


def kms_settings(cluster: Any) -> dict[str, Any] | None:
    """The cluster's enabled `azureKeyVaultKms` (as JSON), or None."""
    return kms_of(cluster.as_dict())


def _roles(clients: AzureClients, scope: str, principal_id: str) -> set[str]:
    """The role definition GUIDs the principal holds at `scope` (or above it)."""
    assignments = clients.authorization().role_assignments.list_for_scope(
        scope, filter=f"principalId eq '{principal_id}'"
    )
    return {
        str(a.role_definition_id).rsplit("/", 1)[-1]
        for a in assignments
        if a.principal_id == principal_id
    }


def _has_key_access(clients: AzureClients, vault: VaultInfo, found: Any, principal_id: str) -> bool:
    """Whether the principal may encrypt and decrypt with the keys of `vault` (`found`: the
    vault as the management API returns it)."""
    if vault.rbac:
        return bool(_roles(clients, vault.id, principal_id) & KEY_ROLES)
    granted = {
        p.lower()
        for policy in found.properties.access_policies or []
        if policy.object_id == principal_id
        for p in policy.permissions.keys_property or []
    }
    return "all" in granted or {"encrypt", "decrypt"} <= granted


def _closed_to_public(found: Any) -> str | None:
    """Why the KMS plugin cannot reach this vault (an ARM Vault) over the public network:
    public access disabled, or a firewall (AKS supports no vault that admits selected
    networks only: https://learn.microsoft.com/azure/aks/use-kms-etcd-encryption#limitations);
    None when it can."""
    if text(found.properties.public_network_access) == "Disabled":
        return "has public network access disabled"
    acls = found.properties.network_acls
    if acls is not None and text(acls.default_action) == "Deny":
        return "has a firewall (default action Deny), which blocks the KMS plugin"
    return None


def _check_public_vault(clients: AzureClients, name: str, kms: dict[str, Any]) -> None:
    """A cluster whose KMS plugin reaches its vault over the public network: refused when
    the vault is closed to it (a new key version would leave the cluster Failed). A vault
    these credentials cannot see is left to the plugin's own error."""
    if kms.get("keyVaultNetworkAccess") == "Private":
        return
    try:
        vault = vault_for_key(clients, kms["keyId"])
    except InvalidRequest:
        return
    if isinstance(vault, HsmInfo):  # not a KMS key store (enabling refuses it): not ours
        return
    found = clients.keyvault_management().vaults.get(vault.id.split("/")[4], vault.name)
    closed = _closed_to_public(found)
    if closed:
        raise InvalidRequest(
            "cluster_name",
            name,
            f"its KMS key vault '{vault.name}' {closed} (the cluster reaches it over the public "
            "network): allow public access from all networks, or switch the cluster to Private "
            "(enable-aks-kms-encryption with key_vault_network_access Private)",
        )


@task(name="Check the KMS request", **STEP_RETRIES)
def validate_enable(credentials: AzureCredentials, request: EnableKmsRequest) -> VaultInfo:
    """Experience and key id, cluster version (or the new cluster's), key region and type,
    private vault and its id, the identity's access when the run grants none: before any
    write. Returns the key's vault."""
    kid = check_experience("key_id", request.key_id, request.experience)
    check_network(request.key_vault_network_access, request.key_vault_resource_id)
    clients = AzureClients.of(credentials, request.subscription_id)
    rg, name = request.resource_group, request.cluster_name
    cluster = read_cluster(clients, rg, name)
    if cluster is None and not request.create_if_missing:
        raise InvalidRequest(
            "cluster_name",
            name,
            f"no such cluster in resource group {rg} (create_if_missing makes it with KMS on)",
        )
    if cluster is None:
        check_kubernetes("kubernetes_version", request.kubernetes_version, request.experience)
    else:
        check_kubernetes(
            f"cluster '{name}' kubernetes_version",
            str(cluster.properties.kubernetes_version),
            request.experience,
        )
    vault = vault_for_key(clients, request.key_id)
    if isinstance(vault, HsmInfo):
        raise InvalidRequest("key_id", request.key_id, KMS_KEY_STORE_RULE)
    if cluster is not None and region_key(vault.location) != region_key(str(cluster.location)):
        raise InvalidRequest(
            "key_id",
            request.key_id,
            f"its key vault '{vault.name}' is in {vault.location}, the cluster in "
            f"{cluster.location}: use a key vault in the cluster's region",
        )
    vault_id = request.key_vault_resource_id
    if vault_id and vault_id.lower() != vault.id.lower():
        raise InvalidRequest(
            "key_vault_resource_id", vault_id, f"not the vault of key_id ({vault.id})"
        )
    found = clients.keyvault_management().vaults.get(vault.id.split("/")[4], vault.name)
    private = request.key_vault_network_access == "Private"
    closed = None if private else _closed_to_public(found)
    if closed:
        raise InvalidRequest(
            "key_vault_network_access",
            request.key_vault_network_access,
            f"key vault '{vault.name}' {closed}: allow public access from all networks, or use "
            f"Private with key_vault_resource_id {vault.id}",
        )
    key = or_none(lambda: _arm_key(clients, vault, kid))
    if key is None:
        raise InvalidRequest("key_id", request.key_id, f"no such key in vault '{vault.name}'")
    check_key_type("key_id", request.key_id, text(key.properties.kty))
    if not key.properties.attributes.enabled:
        raise InvalidRequest("key_id", request.key_id, "the key is disabled")
    if not request.grant_key_access:
        _check_identity_access(clients, request, vault, found, private)
    return vault


def _check_identity_access(
    clients: AzureClients, request: EnableKmsRequest, vault: VaultInfo, found: Any, private: bool
) -> None:
    """The existing identity can encrypt/decrypt, and approve a private vault's endpoint."""
    identities = clients.msi().user_assigned_identities
    identity = or_none(lambda: identities.get(request.resource_group, request.identity_name))
    principal = str(identity.principal_id) if identity else ""
    if not identity or not _has_key_access(clients, vault, found, principal):
        raise InvalidRequest(
            "identity_name",
            request.identity_name,
            f"has no encrypt/decrypt permission on key vault '{vault.name}': grant it "
            "Key Vault Crypto User (RBAC) or the encrypt and decrypt key permissions, or "
            "set grant_key_access",
        )
    if private and not _roles(clients, vault.id, principal) & PRIVATE_ENDPOINT_ROLES:
        raise InvalidRequest(
            "identity_name",
            request.identity_name,
            f"has no Key Vault Contributor on key vault '{vault.name}': with a private vault "
            "AKS approves its private endpoint into the vault as this identity; grant it, or "
            "set grant_key_access",
        )


@task(name="Let the identity encrypt and decrypt with the key", **STEP_RETRIES)
def grant_kms_access(
    credentials: AzureCredentials,
    subscription_id: str | None,
    vault: VaultInfo,
    principal_id: str,
    timeout_seconds: float,
) -> None:
    """Key Vault Crypto User on RBAC vaults, encrypt/decrypt by access policy otherwise."""
    clients = AzureClients.of(credentials, subscription_id)
    granted = grant(
        clients, vault, principal_id, KMS_KEY_PERMISSIONS, KEY_VAULT_CRYPTO_USER, timeout_seconds
    )
    report(vault.id, "grant" if granted else None, note=_key_use(principal_id))


@task(name="Let the identity approve the private vault's endpoint", **STEP_RETRIES)
def grant_private_endpoint_approval(
    credentials: AzureCredentials,
    subscription_id: str | None,
    vault: VaultInfo,
    principal_id: str,
    timeout_seconds: float,
) -> None:
    """Key Vault Contributor on the vault: AKS approves its private endpoint into a private
    vault as the cluster's identity."""
    clients = AzureClients.of(credentials, subscription_id)
    granted = assign_role(clients, vault.id, principal_id, KEY_VAULT_CONTRIBUTOR, timeout_seconds)
    report(vault.id, "grant" if granted else None, note=_approval(principal_id))


def _key_use(principal: str) -> str:
    return f"encrypt/decrypt by {principal}"


def _approval(principal: str) -> str:
    return f"Key Vault Contributor for {principal}"


def _is_access_delay(exc: BaseException) -> bool:
    """The identity's key access, or its right to approve a private endpoint, not in effect
    yet."""
    return isinstance(exc, HttpResponseError) and (
        KMS_ACCESS_CODE in str(exc) or APPROVE_PRIVATE_ENDPOINT in str(exc)
    )


def _arm_key(clients: AzureClients, vault: VaultInfo, kid: KeyId) -> Any:
    """The key (its version, if `kid` names one) read through ARM: the management plane
    answers whatever the vault's network rules (a private vault's data plane is reached by
    AKS through its private endpoint, not by this flow)."""
    keys, group = clients.keyvault_management().keys, vault.id.split("/")[4]
    if kid.version:
        return keys.get_version(group, vault.name, kid.name, kid.version)
    return keys.get(group, vault.name, kid.name)


@task(name="Read the key's current version", **STEP_RETRIES)
def key_version(
    credentials: AzureCredentials, subscription_id: str | None, key_id: str, vault: VaultInfo
) -> str:
    """The versioned id a key id names now (a versionless one: the latest version)."""
    clients = AzureClients.of(credentials, subscription_id)
    return str(_arm_key(clients, vault, KeyId.parse(key_id)).properties.key_uri_with_version)


def _kms_outcome(
    cluster: Any, identity_id: str | None, kms: dict[str, Any], version: str
) -> tuple[str | None, list[Change], str]:
    """What setting the KMS key does to the cluster as it is (None: missing): create it,
    update it (the fields that change; a cluster not Succeeded is re-submitted) or nothing."""
    if cluster is None:
        return "create", [], f"with KMS key {version}"
    diff = kms_changes(cluster.as_dict(), identity_id, kms, version)
    state = text(cluster.properties.provisioning_state)
    if diff or state != "Succeeded":
        return "update", diff, "" if state == "Succeeded" else f"re-submitted: it was {state}"
    return None, [], f"KMS key {version}"


@task(name="Set the cluster's KMS key", **STEP_RETRIES)
def apply_kms(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    identity_id: str | None,
    kms: dict[str, Any],
    version: str,
    rotation: str | None = None,
    timeout_seconds: float = 60,
    new_cluster: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The cluster runs as `identity_id` (None: its own) with `kms`, its tags recording
    `version`; written only when it does not already (a re-run writes nothing). A missing
    cluster is created from `new_cluster` with them in the same write. Key access still
    propagating is retried; a write refused because an operation runs (409) is settled by
    reading the cluster once it ends, written again only if it still lacks the key. Returns
    the cluster's tags."""
    clients = AzureClients.of(credentials, subscription_id)
    clusters = clients.container_service().managed_clusters
    target = cluster_id(clients.subscription_id, resource_group, name)
    cluster = read_cluster(clients, resource_group, name)
    if cluster is None and new_cluster is None:
        raise ResourceError(f"{resource_group}/{name}", "the cluster vanished")
    verb, diff, note = _kms_outcome(cluster, identity_id, kms, version)
    if verb is None:
        report(target, None, note=note)
        return dict(cluster.tags or {})
    body = cluster.as_dict() if cluster is not None else dict(new_cluster or {})
    if identity_id is not None:
        body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}}
    props = body["properties"]
    props["securityProfile"] = {**(props.get("securityProfile") or {}), "azureKeyVaultKms": kms}
    body["tags"] = next_tags(dict(body.get("tags") or {}), version, rotation, datetime.now(UTC))

    def write() -> None:
        retry_while(
            lambda: clusters.begin_create_or_update(resource_group, name, body).result(),
            _is_access_delay,
            timeout_seconds=timeout_seconds,
            first_delay=2,
            on_retry=lambda exc, wait: get_run_logger().info(
                "KMS key access not in effect yet; retrying in %.1f s", wait
            ),
        )

    try:
        write()
    except HttpResponseError as exc:
        if not is_busy(exc):
            raise
        get_run_logger().info("Cluster %s is busy (%s); reading it once settled", name, exc.reason)
        settled = settled_cluster(clients, resource_group, name, timeout_seconds)
        if _kms_outcome(settled, identity_id, kms, version)[0] is None:
            report(target, verb, changes=diff, note="in place once the running operation ended")
            return dict(settled.tags or {})
        write()
    report(target, verb, changes=diff, note=note)
    return dict(body["tags"])


def _core(clients: AzureClients, resource_group: str, name: str) -> Any:
    return core_api(user_kubeconfig(clients, resource_group, name))


def _pending(
    clients: AzureClients, resource_group: str, name: str, tags: dict[str, str], page_size: int
) -> int:
    """How many Secrets may still be sealed with an older version than the tagged one."""
    api = _core(clients, resource_group, name)
    current, at = tags[TAG_CURRENT], rotated_at(tags)
    return sum(needs_rewrite(s, current, at) for s in secrets(api, page_size))


def _rewritten(done: int, version: str) -> tuple[str | None, str]:
    """The verb and note of re-writing `done` Secrets under `version`."""
    if done:
        return "rewrite", f"{done} Secret(s) under key version {version}"
    return None, f"no Secret on an older version than {version}"


@task(name="Re-write the Secrets", **STEP_RETRIES)
def rewrite_secrets(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    tags: dict[str, str],
    page_size: int,
    per_second: float,
) -> int:
    """Re-write (annotated with the current version: a real write, sealed with the current
    key) each Secret that may still be on an older version, at most `per_second`; a Secret
    changed meanwhile (409) is read again. Returns how many were re-written."""
    from kubernetes.client import ApiException  # the kubernetes SDK loads on first use

    clients = AzureClients.of(credentials, subscription_id)
    api = _core(clients, resource_group, name)
    current, at = tags[TAG_CURRENT], rotated_at(tags)
    done, next_at = 0, time.monotonic()
    for secret in secrets(api, page_size):
        if not needs_rewrite(secret, current, at):
            continue
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = time.monotonic() + 1 / per_second
        ns, secret_name = secret["metadata"]["namespace"], secret["metadata"]["name"]
        try:
            api.replace_namespaced_secret(secret_name, ns, annotated(secret, current))
        except ApiException as exc:
            if exc.status != 409:
                raise
            fresh = api.api_client.sanitize_for_serialization(
                api.read_namespaced_secret(secret_name, ns)
            )
            api.replace_namespaced_secret(secret_name, ns, annotated(fresh, current))
        done += 1
    verb, note = _rewritten(done, current)
    report(cluster_id(clients.subscription_id, resource_group, name), verb, note=note)
    return done


@task(name="Verify the cluster's KMS key", **STEP_RETRIES)
def verify_kms(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    key_id: str,
    page_size: int,
) -> KmsState:
    """The cluster reports the key, enabled and settled, and no Secret is left on an older
    key version."""
    clients = AzureClients.of(credentials, subscription_id)
    cluster = read_cluster(clients, resource_group, name)
    if cluster is None:
        raise ResourceError(f"{resource_group}/{name}", "the cluster vanished")
    kms, tags = kms_settings(cluster), dict(cluster.tags or {})
    state = text(cluster.properties.provisioning_state)
    if kms is None or kms.get("keyId") != key_id or state != "Succeeded":
        raise VerificationFailed(
            str(cluster.id), f"the cluster reports KMS {kms} ({state}), not key {key_id}"
        )
    left = _pending(clients, resource_group, name, tags, page_size)
    if left:
        raise VerificationFailed(
            str(cluster.id), f"{left} Secret(s) not re-written under {tags[TAG_CURRENT]}"
        )
    report(str(cluster.id), "verify", note=_verified(key_id))
    return KmsState(
        cluster_id=str(cluster.id),
        experience=experience_of(key_id),
        key_id=key_id,
        key_version=tags[TAG_CURRENT],
        previous_key_version=tags.get(TAG_PREVIOUS),
        rotation_id=tags.get(TAG_ROTATION),
    )


def _verified(key_id: str) -> str:
    return f"KMS key {key_id}, no Secret on an older version"


@task(name="Check the rotation", **STEP_RETRIES)
def validate_rotation(
    credentials: AzureCredentials, request: RotateKmsRequest, rotation: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """The cluster uses KMS with a recorded key version, and a vault its plugin can reach; a
    new rotation is refused while Secrets may still need the previous version (the two-slot
    rule), unless it is the rotation in progress re-run. Returns the cluster's tags and KMS
    settings."""
    rg, name = request.resource_group, request.cluster_name
    clients = AzureClients.of(credentials, request.subscription_id)
    cluster = read_cluster(clients, rg, name)
    if cluster is None:
        raise InvalidRequest("cluster_name", name, f"no such cluster in resource group {rg}")
    tags, kms = dict(cluster.tags or {}), kms_settings(cluster)
    if kms is None or TAG_CURRENT not in tags:
        raise InvalidRequest(
            "cluster_name",
            name,
            "KMS etcd encryption is not enabled by this tool on the cluster: run "
            "enable-aks-kms-encryption first",
        )
    _check_public_vault(clients, name, kms)
    if tags.get(TAG_ROTATION) == rotation or not tags.get(TAG_PREVIOUS):
        return tags, kms
    left = _pending(clients, rg, name, tags, request.secrets_page_size)
    if left:
        raise InvalidRequest(
            "rotation_id",
            rotation,
            f"{left} Secret(s) of cluster '{name}' may still be sealed with the previous key "
            f"version {tags[TAG_PREVIOUS]}; rotating again now would leave the cluster stuck "
            f"(two key slots): finish rotation '{tags.get(TAG_ROTATION)}' first (re-run with "
            "that rotation_id)",
        )
    return tags, kms


@task(name="Plan the KMS encryption", **STEP_RETRIES)
def plan_kms_encryption(
    credentials: AzureCredentials, request: EnableKmsRequest, vault: VaultInfo, version: str
) -> None:
    """What each step of enable-aks-kms-encryption would do, from reads only (`version`: the
    key's current version)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    rg = request.resource_group
    identities = clients.msi().user_assigned_identities
    identity = or_none(lambda: identities.get(rg, request.identity_name))
    identity_id = str(identity.id) if identity else _identity_id(clients, request)
    step = "Create a user-assigned managed identity"
    report(identity_id, None if identity else "create", step=step, planned=True)
    principal = str(identity.principal_id) if identity else None
    who = principal or "the new identity"
    if request.grant_key_access:
        held = principal is not None and holds_key_use(
            clients, vault, principal, KMS_KEY_PERMISSIONS, KEY_VAULT_CRYPTO_USER
        )
        step = "Let the identity encrypt and decrypt with the key"
        report(vault.id, None if held else "grant", step=step, note=_key_use(who), planned=True)
    if request.grant_key_access and request.key_vault_network_access == "Private":
        held = principal is not None and holds_role(
            clients, vault.id, principal, KEY_VAULT_CONTRIBUTOR
        )
        step = "Let the identity approve the private vault's endpoint"
        report(vault.id, None if held else "grant", step=step, note=_approval(who), planned=True)
    page = request.secrets_page_size
    _plan_kms(clients, rg, request.cluster_name, identity_id, request.kms_profile(), version, page)


def _identity_id(clients: AzureClients, request: EnableKmsRequest) -> str:
    """The id the identity will have once created."""
    return resource_id(
        subscription=clients.subscription_id,
        resource_group=request.resource_group,
        namespace="Microsoft.ManagedIdentity",
        type="userAssignedIdentities",
        name=request.identity_name,
    )


@task(name="Plan the KMS key rotation", **STEP_RETRIES)
def plan_kms_rotation(
    credentials: AzureCredentials,
    request: RotateKmsRequest,
    kms: dict[str, Any],
    new: str,
    rotation: str,
) -> None:
    """What the cluster's steps of rotate-aks-kms-key would do on key version `new` (as
    `plan_new_key_version` gives it), from reads only."""
    clients = AzureClients.of(credentials, request.subscription_id)
    rg, name, page = request.resource_group, request.cluster_name, request.secrets_page_size
    _plan_kms(clients, rg, name, None, rotated_kms(kms, new), new, page, rotation)


def _plan_kms(
    clients: AzureClients,
    resource_group: str,
    name: str,
    identity_id: str | None,
    kms: dict[str, Any],
    version: str,
    page_size: int,
    rotation: str | None = None,
) -> None:
    """What setting the cluster's KMS key, re-writing its Secrets and verifying would do."""
    target = cluster_id(clients.subscription_id, resource_group, name)
    cluster = read_cluster(clients, resource_group, name)
    verb, diff, note = _kms_outcome(cluster, identity_id, kms, version)
    step = "Set the cluster's KMS key"
    report(target, verb, step=step, changes=diff, note=note, planned=True)
    tags = dict(cluster.tags or {}) if cluster is not None else {}
    tags = next_tags(tags, version, rotation, datetime.now(UTC))
    left = _pending(clients, resource_group, name, tags, page_size) if cluster else 0
    verb, note = _rewritten(left, version)
    report(target, verb, step="Re-write the Secrets", note=note, planned=True)
    note = _verified(kms["keyId"])
    report(target, "verify", step="Verify the cluster's KMS key", note=note, planned=True)
