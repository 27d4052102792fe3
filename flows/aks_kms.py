"""KMS etcd encryption of AKS clusters with a Key Vault key: enable it (identity, key access,
`securityProfile.azureKeyVaultKms`, existing Secrets encrypted) and rotate it (new key
version, cluster updated, every Secret re-written and proven on the new version)."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from blocks.azure import AzureCredentials
from byok.aks_kms import TAG_CURRENT, EnableKmsRequest, KmsState, RotateKmsRequest, rotated_kms
from byok.aks_models import cluster_id
from byok.outcomes import Plan
from byok.parameters import parse_request
from tasks.acr_identity import ensure_user_identity
from tasks.aks_kms import (
    apply_kms,
    grant_kms_access,
    grant_private_endpoint_approval,
    key_version,
    plan_kms_encryption,
    plan_kms_rotation,
    rewrite_secrets,
    validate_enable,
    validate_rotation,
    verify_kms,
)
from tasks.events import emit_byok_event
from tasks.key_vault import new_key_version, plan_new_key_version
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.run_lock import resource_lock
from tasks.subscription import check_subscription_regions

__all__ = [  # the requests and result, importable from the flows that take them
    "EnableKmsRequest",
    "KmsState",
    "RotateKmsRequest",
    "enable_aks_kms_encryption",
    "rotate_aks_kms_key",
]


@flow(name="enable-aks-kms-encryption", persist_result=True, validate_parameters=False)
@refuse_quietly
def enable_aks_kms_encryption(
    request: EnableKmsRequest, credentials: AzureCredentials | None = None
) -> KmsState | Plan:
    """Check → one run per cluster → identity → its key access (and, for a private vault,
    the right to approve AKS's private endpoint into it) → the cluster's KMS key (a missing
    cluster created with it, when asked) → existing Secrets re-written (encrypted) → verify.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(EnableKmsRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    check_subscription_regions(credentials, sub, {})
    vault = validate_enable(credentials, request)
    version = key_version(credentials, sub, request.key_id, vault)
    if request.plan_only:
        plan_kms_encryption(credentials, request, vault, version)
        return publish_plan("enable-aks-kms-encryption")
    name = request.cluster_name
    with resource_lock(cluster_id(sub, rg, name), wait=request.wait_for_other_run):
        identity = ensure_user_identity(credentials, sub, rg, request.identity_name, vault.location)
        timeout = request.propagation_timeout_minutes * 60
        if request.grant_key_access:
            grant_kms_access(credentials, sub, vault, identity.principal_id, timeout)
        if request.grant_key_access and request.key_vault_network_access == "Private":
            grant_private_endpoint_approval(credentials, sub, vault, identity.principal_id, timeout)
        kms, new_cluster = request.kms_profile(), request.new_cluster(vault.location)
        tags = apply_kms(
            credentials, sub, rg, name, identity.id, kms, version, None, timeout, new_cluster
        )
        pace = (request.secrets_page_size, request.secrets_per_second)
        written = rewrite_secrets(credentials, sub, rg, name, tags, *pace)
        state = verify_kms(credentials, sub, rg, name, request.key_id, request.secrets_page_size)
        emit_byok_event(
            "resource.encrypted", state.cluster_id, "aks-cluster", related={"key": request.key_id}
        )
        summarize("enable-aks-kms-encryption")
        return state.model_copy(update={"secrets_rewritten": written})


@flow(name="rotate-aks-kms-key", persist_result=True, validate_parameters=False)
@refuse_quietly
def rotate_aks_kms_key(
    request: RotateKmsRequest, credentials: AzureCredentials | None = None
) -> KmsState | Plan:
    """One run per cluster → check (two-slot rule) → new key version (once per rotation) →
    cluster on it → every Secret re-written → verify none is left on the old version. A
    re-run with the same `rotation_id` finishes an interrupted rotation.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(RotateKmsRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub, rg = request.subscription_id or credentials.subscription_id, request.resource_group
    check_subscription_regions(credentials, sub, {})
    name, rotation = request.cluster_name, request.rotation_id or str(flow_run.id)
    with resource_lock(cluster_id(sub, rg, name), wait=request.wait_for_other_run):
        tags, kms = validate_rotation(credentials, request, rotation)
        if request.plan_only:
            new = plan_new_key_version(credentials, sub, tags[TAG_CURRENT], rotation)
            plan_kms_rotation(credentials, request, kms, new, rotation)
            return publish_plan("rotate-aks-kms-key")
        new = new_key_version(credentials, sub, tags[TAG_CURRENT], rotation)
        kms = rotated_kms(kms, new)
        tags = apply_kms(credentials, sub, rg, name, None, kms, new, rotation)
        pace = (request.secrets_page_size, request.secrets_per_second)
        written = rewrite_secrets(credentials, sub, rg, name, tags, *pace)
        state = verify_kms(credentials, sub, rg, name, kms["keyId"], request.secrets_page_size)
        emit_byok_event("key.rotated", state.cluster_id, "aks-cluster", related={"key": new})
        summarize("rotate-aks-kms-key")
        return state.model_copy(update={"secrets_rewritten": written, "rotation_id": rotation})
