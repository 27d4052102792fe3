"""Cross-tenant customer-managed keys for a disk encryption set (issue 21, part 2), as
"Encrypt managed disks with cross-tenant customer-managed keys" lays it out
(https://learn.microsoft.com/azure/virtual-machines/disks-cross-tenant-customer-managed-keys):

prepare-cross-tenant-disk-encryption-set: check both sides (names, tenants, the set in its key
vault's region, each block's Azure roles) → service provider's tenant: multi-tenant app,
user-assigned identity, the identity federated to the app → customer's tenant: the app
installed (its service principal), vault with purge protection, RSA key, the key granted to
the app → service provider's set with the identity, `federatedClientId` and the customer's key
URL → both sides checked, each missing piece named with its side → the run's summary. With
`mode: check` it writes nothing and only checks (is the chain whole?); with `plan_only` it
writes nothing and reports the plan of what set-up would write (what would it take?), in
either mode."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from blocks.chosen import chosen_block
from byok.cross_tenant_models import CrossTenantDesRequest, CrossTenantDesResult
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.permissions import DES_WRITE, IDENTITY_WRITE, ROLE_ASSIGNMENT_WRITE, VAULT_WRITE
from tasks.acr_identity import ensure_user_identity
from tasks.cross_tenant import (
    ensure_app_installed,
    ensure_federated_credential,
    ensure_multi_tenant_app,
    plan_cross_tenant_set,
    validate_cross_tenant_request,
    verify_cross_tenant_set,
)
from tasks.disk_encryption_set import ensure_disk_encryption_set
from tasks.events import emit_byok_event
from tasks.key_vault import check_key_vault, ensure_key, ensure_key_vault, grant_key_use
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.resource_group import ensure_resource_group
from tasks.run_lock import resource_lock
from tasks.subscription import check_permissions

__all__ = [  # the request and result, importable from the flow that takes them
    "CrossTenantDesRequest",
    "CrossTenantDesResult",
    "prepare_cross_tenant_disk_encryption_set",
]


@flow(name="prepare-cross-tenant-disk-encryption-set", validate_parameters=False)
@refuse_quietly
def prepare_cross_tenant_disk_encryption_set(
    request: CrossTenantDesRequest,
    provider_credentials: AzureCredentials | None = None,
    customer_credentials: AzureCredentials | None = None,
) -> CrossTenantDesResult | Plan:
    """Provider: multi-tenant app → identity → federated credential; customer: app installed →
    vault → key → key granted to the app; provider: set with identity, federatedClientId and
    key URL → both sides checked (each missing piece named with its side). `mode: check`
    only checks; `plan_only` is the plan of what set-up would write (in either mode).

    Args:
        provider_credentials: A saved 'BYOK Azure Credentials' block of the service
            provider's tenant; empty: the block named by `provider_credentials_block`.
        customer_credentials: A saved 'BYOK Azure Credentials' block of the customer's
            tenant; empty: the block named by `customer_credentials_block`.
    """
    request = parse_request(CrossTenantDesRequest, request)
    provider = chosen_block(
        AzureCredentials,
        provider_credentials,
        request.provider_credentials_block,
        "request.provider_credentials_block",
        "provider_credentials",
    )
    customer = chosen_block(
        AzureCredentials,
        customer_credentials,
        request.customer_credentials_block,
        "request.customer_credentials_block",
        "customer_credentials",
    )
    sub, rg = request.provider_subscription_id, request.resource_group
    their_sub, their_rg = request.customer_subscription_id, request.customer_resource_group
    timeout = request.propagation_timeout_minutes * 60
    target = validate_cross_tenant_request(provider, customer, request)
    check_key_vault(
        customer, their_sub, their_rg, request.vault_name, request.key_name, request.location
    )
    if request.mode == "check" and not request.plan_only:
        return verify_cross_tenant_set(provider, customer, request)
    name = "prepare-cross-tenant-disk-encryption-set"
    check_permissions(provider, sub, rg, [IDENTITY_WRITE, DES_WRITE], name)
    grants = [ROLE_ASSIGNMENT_WRITE] if request.vault_rbac else []
    check_permissions(customer, their_sub, their_rg, [VAULT_WRITE, *grants], name)
    if request.plan_only:
        plan_cross_tenant_set(provider, customer, request)
        return publish_plan(name)
    with resource_lock(target, wait=request.wait_for_other_run):
        ensure_resource_group(provider, sub, rg, request.location)
        app = ensure_multi_tenant_app(provider, request.app_name)
        identity = ensure_user_identity(provider, sub, rg, request.identity_name, request.location)
        ensure_federated_credential(provider, app, identity.name, identity.principal_id)
        principal = ensure_app_installed(customer, app)
        ensure_resource_group(customer, their_sub, their_rg, request.key_vault_location)
        vault = ensure_key_vault(
            customer,
            their_sub,
            their_rg,
            request.vault_name,
            request.key_vault_location,
            request.vault_rbac,
            timeout,
        )
        key = ensure_key(customer, their_sub, vault, request.key_name, request.key_size, timeout)
        grant_key_use.with_options(name="Grant the app's service principal the key")(
            customer, their_sub, vault, principal, timeout
        )
        ensure_disk_encryption_set(
            provider,
            sub,
            rg,
            request.des_name,
            request.location,
            vault,
            key,
            "EncryptionAtRestWithCustomerKey",
            False,
            identity_id=identity.id,
            federated_client_id=app.app_id,
            access_timeout_seconds=timeout,
        )
        result = verify_cross_tenant_set(provider, customer, request)
        emit_byok_event(
            "resource.encrypted",
            result.disk_encryption_set.id,
            "disk-encryption-set",
            related={"key": result.key.id, "vault": result.vault.id},
        )
        summarize(name)
        return result
