"""KMS etcd encryption steps: the checks of a request, the identity's key access, the
cluster's `securityProfile.azureKeyVaultKms` (and the tags recording its key versions), and
every Secret re-written through the cluster's Kubernetes API so it is sealed with the current
key version."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
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
    TAG_ROTATED_AT,
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
    needs_rewrite,
)
from byok.azure_errors import or_none
from byok.errors import InvalidRequest, ResourceError, VerificationFailed
from byok.key_store import HsmInfo, VaultInfo
from byok.keyvault_ids import KeyId
from byok.retrying import retry_while
from byok.sdk_values import text
from byok.validation import region_key
from clients.aks_clusters import is_busy, read_cluster, settled_cluster
from clients.aks_kubernetes import core_api
from clients.azure import AzureClients
from clients.key_store_access import assign_role, grant, vault_for_key
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
    body = cluster.as_dict()
    props = body.get("properties") or {}
    kms = (props.get("securityProfile") or {}).get("azureKeyVaultKms")
    return kms if kms and kms.get("enabled") else None


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
    key = or_none(lambda: clients.keys(vault.url).get_key(kid.name, kid.version))
    if key is None:
        raise InvalidRequest("key_id", request.key_id, f"no such key in vault '{vault.name}'")
    check_key_type("key_id", request.key_id, text(key.key_type))
    if not key.properties.enabled:
        raise InvalidRequest("key_id", request.key_id, "the key is disabled")
    found = clients.keyvault_management().vaults.get(vault.id.split("/")[4], vault.name)
    private = request.key_vault_network_access == "Private"
    if not private and text(found.properties.public_network_access) == "Disabled":
        raise InvalidRequest(
            "key_vault_network_access",
            request.key_vault_network_access,
            f"key vault '{vault.name}' has public network access disabled: use Private, with "
            f"key_vault_resource_id {vault.id}",
        )
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
    grant(clients, vault, principal_id, KMS_KEY_PERMISSIONS, KEY_VAULT_CRYPTO_USER, timeout_seconds)
    get_run_logger().info(
        "%s may encrypt and decrypt with the keys of %s", principal_id, vault.name
    )


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
    assign_role(clients, vault.id, principal_id, KEY_VAULT_CONTRIBUTOR, timeout_seconds)
    get_run_logger().info("%s may approve private endpoints of %s", principal_id, vault.name)


def _is_access_delay(exc: BaseException) -> bool:
    """The identity's key access, or its right to approve a private endpoint, not in effect
    yet."""
    return isinstance(exc, HttpResponseError) and (
        KMS_ACCESS_CODE in str(exc) or APPROVE_PRIVATE_ENDPOINT in str(exc)
    )


@task(name="Read the key's current version", **STEP_RETRIES)
def key_version(credentials: AzureCredentials, subscription_id: str | None, key_id: str) -> str:
    """The versioned id a key id names now (a versionless one: the latest version)."""
    kid = KeyId.parse(key_id)
    keys = AzureClients.of(credentials, subscription_id).keys(kid.vault_url)
    return str(keys.get_key(kid.name, kid.version).id)


def next_tags(tags: dict[str, str], version: str, rotation: str | None) -> dict[str, str]:
    """The cluster's tags once `version` is its key version: unchanged if it already is;
    else the old version becomes the previous one, and the time and rotation are recorded."""
    if tags.get(TAG_CURRENT) == version:
        return tags
    changed = {**tags, TAG_CURRENT: version, TAG_ROTATED_AT: now_tag()}
    if tags.get(TAG_CURRENT):
        changed[TAG_PREVIOUS] = tags[TAG_CURRENT]
    if rotation:
        changed[TAG_ROTATION] = rotation
    return changed


def _in_place(cluster: Any, identity_id: str | None, kms: dict[str, Any], version: str) -> bool:
    """Whether the settled cluster runs as `identity_id` (None: any) with `kms`, its tags
    recording `version`."""
    body = cluster.as_dict()
    users = {k.lower() for k in (body.get("identity") or {}).get("userAssignedIdentities") or {}}
    have = kms_settings(cluster) or {}
    return (
        text(cluster.properties.provisioning_state) == "Succeeded"
        and (identity_id is None or identity_id.lower() in users)
        and {k: have.get(k) for k in kms} == kms
        and (cluster.tags or {}).get(TAG_CURRENT) == version
    )


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
    cluster = read_cluster(clients, resource_group, name)
    if cluster is None and new_cluster is None:
        raise ResourceError(f"{resource_group}/{name}", "the cluster vanished")
    if cluster is not None and _in_place(cluster, identity_id, kms, version):
        get_run_logger().info("Cluster %s already uses KMS key %s", name, version)
        return dict(cluster.tags or {})
    body = cluster.as_dict() if cluster is not None else dict(new_cluster or {})
    if identity_id is not None:
        body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}}
    props = body["properties"]
    props["securityProfile"] = {**(props.get("securityProfile") or {}), "azureKeyVaultKms": kms}
    body["tags"] = next_tags(dict(body.get("tags") or {}), version, rotation)

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
        if _in_place(settled, identity_id, kms, version):
            get_run_logger().info("Cluster %s uses KMS key %s", name, version)
            return dict(settled.tags or {})
        write()
    get_run_logger().info("Cluster %s uses KMS key %s", name, version)
    return dict(body["tags"])


def _core(credentials: AzureCredentials, subscription_id: str | None, rg: str, name: str) -> Any:
    clusters = AzureClients.of(credentials, subscription_id).container_service().managed_clusters
    found = clusters.list_cluster_user_credentials(rg, name)
    return core_api(bytes((found.kubeconfigs or [])[0].value or b""))


def _secrets(api: Any, page_size: int) -> Any:
    """Every Secret (as JSON), namespace by namespace, page by page."""
    for namespace in api.list_namespace().items:
        token = None
        while True:
            page = api.list_namespaced_secret(
                namespace.metadata.name, limit=page_size, _continue=token
            )
            for item in page.items:
                yield api.api_client.sanitize_for_serialization(item)
            token = page.metadata._continue
            if not token:
                break


def _rotated_at(tags: dict[str, str]) -> datetime | None:
    value = tags.get(TAG_ROTATED_AT)
    return datetime.fromisoformat(value) if value else None


def pending(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    tags: dict[str, str],
    page_size: int,
) -> int:
    """How many Secrets may still be sealed with an older version than the tagged one."""
    api = _core(credentials, subscription_id, resource_group, name)
    current, rotated_at = tags[TAG_CURRENT], _rotated_at(tags)
    return sum(needs_rewrite(s, current, rotated_at) for s in _secrets(api, page_size))


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

    api = _core(credentials, subscription_id, resource_group, name)
    current, rotated_at = tags[TAG_CURRENT], _rotated_at(tags)
    done, next_at = 0, time.monotonic()
    for secret in _secrets(api, page_size):
        if not needs_rewrite(secret, current, rotated_at):
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
    get_run_logger().info("Re-wrote %d Secret(s) under key version %s", done, current)
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
    cluster = read_cluster(AzureClients.of(credentials, subscription_id), resource_group, name)
    if cluster is None:
        raise ResourceError(f"{resource_group}/{name}", "the cluster vanished")
    kms, tags = kms_settings(cluster), dict(cluster.tags or {})
    state = text(cluster.properties.provisioning_state)
    if kms is None or kms.get("keyId") != key_id or state != "Succeeded":
        raise VerificationFailed(
            str(cluster.id), f"the cluster reports KMS {kms} ({state}), not key {key_id}"
        )
    left = pending(credentials, subscription_id, resource_group, name, tags, page_size)
    if left:
        raise VerificationFailed(
            str(cluster.id), f"{left} Secret(s) not re-written under {tags[TAG_CURRENT]}"
        )
    return KmsState(
        cluster_id=str(cluster.id),
        experience=experience_of(key_id),
        key_id=key_id,
        key_version=tags[TAG_CURRENT],
        previous_key_version=tags.get(TAG_PREVIOUS),
        rotation_id=tags.get(TAG_ROTATION),
    )


@task(name="Check the rotation", **STEP_RETRIES)
def validate_rotation(
    credentials: AzureCredentials, request: RotateKmsRequest, rotation: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """The cluster uses KMS with a recorded key version; a new rotation is refused while
    Secrets may still need the previous version (the two-slot rule), unless it is the
    rotation in progress re-run. Returns the cluster's tags and KMS settings."""
    rg, name = request.resource_group, request.cluster_name
    cluster = read_cluster(AzureClients.of(credentials, request.subscription_id), rg, name)
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
    if tags.get(TAG_ROTATION) == rotation or not tags.get(TAG_PREVIOUS):
        return tags, kms
    left = pending(credentials, request.subscription_id, rg, name, tags, request.secrets_page_size)
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


def now_tag() -> str:
    """The time of a key change, as the cluster tag records it."""
    return datetime.now(UTC).isoformat(timespec="seconds")
