"""Cross-tenant customer-managed key steps (byok.cross_tenant_models): check a request on both
sides before any write, the service provider's multi-tenant app and its federated credential
(Microsoft Graph of the provider's tenant), the app installed in the customer's tenant (Graph
of the customer's tenant), and the check of the whole chain, which names each missing piece
with its side."""

from __future__ import annotations

from typing import Any

from azure.mgmt.compute.models import DiskEncryptionSet
from azure.mgmt.core.tools import resource_id
from azure.mgmt.keyvault.models import Vault
from prefect import task

from blocks.azure import AzureCredentials
from byok.azure_errors import is_azure_error, named_failure, or_none
from byok.cross_tenant_models import (
    KEY_USE_PERMISSIONS,
    KEY_USE_ROLES,
    MULTI_TENANT,
    AppInfo,
    ChainFacts,
    CrossTenantBroken,
    CrossTenantDesRequest,
    CrossTenantDesResult,
    SetFacts,
    federated_credential_body,
    federates,
    issuer,
    missing_pieces,
)
from byok.disk_encryption_set_models import check_existing_des, des_id, des_info
from byok.key_sources import check_cross_tenant_region
from byok.key_store import CRYPTO_OFFICER, OPERATOR_KEY_PERMISSIONS, KeyInfo, VaultInfo
from byok.keyvault_ids import KeyId
from byok.outcomes import Change
from byok.retrying import write_or_find
from byok.sdk_values import text
from byok.tokens import object_id
from byok.validation import InvalidRequest, check_name, same_region
from clients.azure import AzureClients
from clients.graph import graph, install_app, odata_text, service_principal_id
from clients.key_store_access import holds_key_use
from tasks.outcomes import planned, report
from tasks.retry import STEP_RETRIES
from tasks.subscription import plan_resource_group


def _tenant(credentials: AzureCredentials, field: str) -> str:
    if not credentials.tenant_id:
        raise InvalidRequest(field, None, "the block names no tenant_id; set it")
    return credentials.tenant_id.lower()


def _apps(clients: AzureClients, name: str) -> list[dict[str, Any]]:
    return graph(clients).list("/applications", f"displayName eq {odata_text(name)}")


def _one_app(clients: AzureClients, name: str) -> dict[str, Any] | None:
    """The tenant's app registration of that display name, or None; two are ambiguous."""
    found = _apps(clients, name)
    if len(found) > 1:
        raise InvalidRequest(
            "app_name",
            name,
            f"{len(found)} app registrations have this display name in the service provider's "
            "tenant; rename all but one",
        )
    return found[0] if found else None


def _app_info(app: dict[str, Any]) -> AppInfo:
    return AppInfo(
        object_id=str(app["id"]), app_id=str(app["appId"]), display_name=str(app["displayName"])
    )


def _issuer(provider: AzureCredentials) -> str:
    return issuer(provider.endpoints().authority_host, _tenant(provider, "provider"))


def _read_vault(clients: AzureClients, group: str, name: str) -> Vault | None:
    return or_none(lambda: clients.keyvault_management().vaults.get(group, name))


@task(name="Check the cross-tenant request", **STEP_RETRIES)
def validate_cross_tenant_request(
    provider: AzureCredentials, customer: AzureCredentials, request: CrossTenantDesRequest
) -> str:
    """Read-only, before any write: names, two distinct tenants, an existing vault in the
    customer's tenant, the set in its key vault's region, an existing set usable as it is.
    Returns the set's id."""
    check_name("resource_group", "resource_group", request.resource_group)
    check_name("resource_group", "customer_resource_group", request.customer_resource_group)
    check_name("identity", "identity_name", request.identity_name)
    check_name("disk_encryption_set", "des_name", request.des_name)
    check_name("key_vault", "vault_name", request.vault_name)
    check_name("key", "key_name", request.key_name)
    if not request.app_name.strip() or request.app_name != request.app_name.strip():
        raise InvalidRequest("app_name", request.app_name, "a display name, not blank")
    provider_tenant = _tenant(provider, "provider_credentials_block")
    customer_tenant = _tenant(customer, "customer_credentials_block")
    if provider_tenant == customer_tenant:
        raise InvalidRequest(
            "customer_credentials_block",
            request.customer_credentials_block,
            f"in the service provider's tenant ({provider_tenant}); a key of the same tenant "
            "needs no federation: use prepare-disk-encryption-set",
        )
    theirs = AzureClients.of(customer, request.customer_subscription_id)
    vault = _read_vault(theirs, request.customer_resource_group, request.vault_name)
    vault_location = request.key_vault_location
    if vault is not None:
        vault_tenant = str(vault.properties.tenant_id).lower()
        if vault_tenant != customer_tenant:
            raise InvalidRequest(
                "vault_name",
                request.vault_name,
                f"the vault is in tenant {vault_tenant}, not the customer's ({customer_tenant})",
            )
        vault_location = str(vault.location)
    check_cross_tenant_region("location", request.location, vault_location)
    ours = AzureClients.of(provider, request.provider_subscription_id)
    existing = or_none(
        lambda: ours.compute().disk_encryption_sets.get(request.resource_group, request.des_name)
    )
    if existing is not None:
        same_region(
            "location", request.location, str(existing.location), f"set '{request.des_name}'"
        )
        check_existing_des(existing, "EncryptionAtRestWithCustomerKey")
    return des_id(ours.subscription_id, request.resource_group, request.des_name)


@task(name="Register the multi-tenant app", **STEP_RETRIES)
def ensure_multi_tenant_app(provider: AzureCredentials, name: str) -> AppInfo:
    """The provider's app registration of that display name, made multi-tenant
    (`az ad app create --display-name … --sign-in-audience AzureADMultipleOrgs`); a create
    whose answer was lost is found by its name, not sent again."""
    clients = AzureClients.of(provider)
    api = graph(clients)
    with named_failure(f"app registration '{name}'", "registration"):
        app = _one_app(clients, name)
        if app is None:
            body = {"displayName": name, "signInAudience": MULTI_TENANT}
            app = write_or_find(
                lambda: api.send("POST", "/applications", body),
                lambda: _one_app(clients, name),
                is_azure_error,
            )
            report(_app_said(app), "create", note=MULTI_TENANT)
        elif app.get("signInAudience") != MULTI_TENANT:
            api.send("PATCH", f"/applications/{app['id']}", {"signInAudience": MULTI_TENANT})
            report(_app_said(app), "update", changes=[_audience(app)])
        else:
            report(_app_said(app), None)
    return _app_info(app)


def _app_said(app: dict[str, Any]) -> str:
    return f"app '{app['displayName']}' ({app['appId']})"


def _audience(app: dict[str, Any]) -> Change:
    return Change(field="signInAudience", old=app.get("signInAudience"), new=MULTI_TENANT)


@task(name="Federate the identity with the app", **STEP_RETRIES)
def ensure_federated_credential(
    provider: AzureCredentials, app: AppInfo, identity_name: str, principal_id: str
) -> str:
    """A federated identity credential on the app whose issuer and subject are the
    user-assigned identity (`az ad app federated-credential create`); one that already
    federates it is kept. Returns the credential's name."""
    clients = AzureClients.of(provider)
    api = graph(clients)
    path = f"/applications/{app.object_id}/federatedIdentityCredentials"
    wanted = _issuer(provider)

    def found() -> dict[str, Any] | None:
        return next((c for c in api.list(path) if federates(c, wanted, principal_id)), None)

    with named_failure(f"app '{app.display_name}' ({app.app_id})", "federated credential"):
        credential = found()
        made = credential is None
        if credential is None:
            body = federated_credential_body(identity_name, wanted, principal_id)
            credential = write_or_find(lambda: api.send("POST", path, body), found, is_azure_error)
    report(_federation(app, identity_name), "create" if made else None)
    return str(credential["name"])


def _federation(app: AppInfo, identity_name: str) -> str:
    return f"app '{app.display_name}' ({app.app_id}): federated credential for {identity_name}"


@task(name="Install the app in the customer's tenant", **STEP_RETRIES)
def ensure_app_installed(customer: AzureCredentials, app: AppInfo) -> str:
    """The app's service principal in the customer's tenant (`az ad sp create --id <appId>`),
    made once. Returns its object id."""
    with named_failure(f"customer tenant '{customer.tenant_id}'", f"installing {app.app_id}"):
        principal, made = install_app(AzureClients.of(customer), app.app_id)
    report(_installed(customer, app), "create" if made else None, note=principal)
    return principal


def _installed(customer: AzureCredentials, app: AppInfo) -> str:
    return f"tenant {customer.tenant_id}: service principal of app {app.app_id}"


def _key_access(clients: AzureClients, vault: Vault, principal_id: str) -> bool:
    """Whether the principal may get, wrap and unwrap the vault's keys: an access policy, or
    on RBAC vaults a role assignment at the vault or above whose role covers them."""
    if vault.properties.enable_rbac_authorization:
        assignments = clients.authorization().role_assignments.list_for_scope(
            str(vault.id), filter=f"principalId eq '{principal_id}'"
        )
        target = str(vault.id).lower() + "/"
        return any(
            a.principal_id == principal_id
            and str(a.role_definition_id).rsplit("/", 1)[-1] in KEY_USE_ROLES
            and target.startswith(str(a.scope).lower().rstrip("/") + "/")
            for a in assignments
        )
    granted = {
        p.lower()
        for policy in vault.properties.access_policies or []
        if policy.object_id == principal_id
        for p in policy.permissions.keys_property or []
    }
    return "all" in granted or granted >= KEY_USE_PERMISSIONS


def _provider_facts(
    provider: AzureCredentials, request: CrossTenantDesRequest, facts: ChainFacts
) -> DiskEncryptionSet | None:
    clients = AzureClients.of(provider, request.provider_subscription_id)
    app = _one_app(clients, request.app_name)
    if app is not None:
        facts.app, facts.app_audience = _app_info(app), app.get("signInAudience")
    uai = or_none(
        lambda: clients.msi().user_assigned_identities.get(
            request.resource_group, request.identity_name
        )
    )
    if uai is not None:
        facts.identity_id, facts.identity_principal_id = str(uai.id), str(uai.principal_id)
    if facts.app is not None and uai is not None:
        path = f"/applications/{facts.app.object_id}/federatedIdentityCredentials"
        facts.federated = any(
            federates(c, facts.issuer, str(uai.principal_id)) for c in graph(clients).list(path)
        )
    des = or_none(
        lambda: clients.compute().disk_encryption_sets.get(request.resource_group, request.des_name)
    )
    if des is not None:
        facts.des = SetFacts(
            id=str(des.id),
            provisioning_state=text(des.properties.provisioning_state),
            federated_client_id=des.properties.federated_client_id,
            identity_ids=list((des.identity.user_assigned_identities or {}).keys()),
            key_url=str(des.properties.active_key.key_url),
        )
    return des


def _customer_facts(
    customer: AzureCredentials, request: CrossTenantDesRequest, facts: ChainFacts
) -> tuple[VaultInfo | None, KeyInfo | None]:
    clients = AzureClients.of(customer, request.customer_subscription_id)
    if facts.app is not None:
        facts.service_principal_id = service_principal_id(clients, facts.app.app_id)
    vault = _read_vault(clients, request.customer_resource_group, request.vault_name)
    if vault is None:
        return None, None
    facts.vault_found = True
    if facts.service_principal_id is not None:
        facts.key_access = _key_access(clients, vault, facts.service_principal_id)
    store = VaultInfo(
        id=str(vault.id),
        name=str(vault.name),
        url=str(vault.properties.vault_uri).rstrip("/"),
        location=str(vault.location),
        rbac=bool(vault.properties.enable_rbac_authorization),
    )
    key = or_none(lambda: clients.keys(store.url).get_key(request.key_name))
    if key is None:
        return store, None
    kid = KeyId.parse(str(key.id))
    facts.key_id = kid.versionless
    size = len(getattr(key.key, "n", None) or b"") * 8
    info = KeyInfo(
        id=kid.versioned,
        versionless_id=kid.versionless,
        name=kid.name,
        version=str(kid.version),
        size=size,
    )
    return store, info


def _chain(
    provider: AzureCredentials, customer: AzureCredentials, request: CrossTenantDesRequest
) -> tuple[ChainFacts, DiskEncryptionSet | None, VaultInfo | None, KeyInfo | None]:
    """Both tenants' pieces of the chain, as read: the facts, the set, vault and key."""
    facts = ChainFacts(
        provider_tenant_id=_tenant(provider, "provider_credentials_block"),
        customer_tenant_id=_tenant(customer, "customer_credentials_block"),
        app_name=request.app_name,
        identity_name=request.identity_name,
        issuer=_issuer(provider),
        vault_name=request.vault_name,
        key_name=request.key_name,
        des_name=request.des_name,
    )
    des = _provider_facts(provider, request, facts)
    store, key = _customer_facts(customer, request, facts)
    return facts, des, store, key


@task(name="Check both sides of the cross-tenant set", **STEP_RETRIES)
def verify_cross_tenant_set(
    provider: AzureCredentials, customer: AzureCredentials, request: CrossTenantDesRequest
) -> CrossTenantDesResult:
    """Read both tenants (writes nothing): the multi-tenant app, the identity federated to
    it, the app's service principal in the customer's tenant with key access on the vault,
    the key, and the set (Succeeded, with that identity, app and key). Raises
    `CrossTenantBroken` naming every missing piece with its side."""
    facts, des, store, key = _chain(provider, customer, request)
    target = des_id(
        AzureClients.of(provider, request.provider_subscription_id).subscription_id,
        request.resource_group,
        request.des_name,
    )
    missing = missing_pieces(facts)
    if missing:
        raise CrossTenantBroken(target, missing)
    assert facts.app and facts.identity_id and facts.service_principal_id and store and key
    assert des is not None
    info = des_info(des)
    note = f"key {info.key_url} of tenant {facts.customer_tenant_id} through app {facts.app.app_id}"
    report(info.id, "verify", note=note)
    return CrossTenantDesResult(
        provider_tenant_id=facts.provider_tenant_id,
        customer_tenant_id=facts.customer_tenant_id,
        app=facts.app,
        identity_id=facts.identity_id,
        customer_service_principal_id=facts.service_principal_id,
        vault=store,
        key=key,
        disk_encryption_set=info,
    )


@task(name="Plan the cross-tenant set", **STEP_RETRIES)
def plan_cross_tenant_set(
    provider: AzureCredentials, customer: AzureCredentials, request: CrossTenantDesRequest
) -> None:
    """What each step of the set-up would do on both sides, from reads only (the same reads
    as the check)."""
    facts, des, store, key = _chain(provider, customer, request)
    plan_resource_group.fn(provider, request.provider_subscription_id, request.resource_group)
    app = facts.app or AppInfo(object_id="", app_id="(new)", display_name=request.app_name)
    raw = {"displayName": app.display_name, "appId": app.app_id, "signInAudience": None}
    audience = {**raw, "signInAudience": facts.app_audience}

    multi = facts.app_audience == MULTI_TENANT
    verb = "create" if facts.app is None else None if multi else "update"
    changes = [_audience(audience)] if verb == "update" else []
    planned("Register the multi-tenant app", _app_said(raw), verb, changes=changes)
    ours = AzureClients.of(provider, request.provider_subscription_id)
    identity = facts.identity_id or resource_id(
        subscription=ours.subscription_id,
        resource_group=request.resource_group,
        namespace="Microsoft.ManagedIdentity",
        type="userAssignedIdentities",
        name=request.identity_name,
    )
    made = facts.identity_id is not None
    planned("Create a user-assigned managed identity", identity, None if made else "create")
    federation = _federation(app, request.identity_name)
    planned("Federate the identity with the app", federation, None if facts.federated else "create")
    principal = facts.service_principal_id
    installed = _installed(customer, app)
    planned("Install the app in the customer's tenant", installed, None if principal else "create")
    theirs = AzureClients.of(customer, request.customer_subscription_id)
    plan_resource_group.fn(customer, theirs.subscription_id, request.customer_resource_group)
    vault = store.id if store else f"key vault {request.vault_name}"
    planned("Create key vault", vault, None if store else "create")
    me = object_id(theirs.credential, theirs.endpoints.arm_scope)
    mine = store is not None and holds_key_use(
        theirs, store, me, OPERATOR_KEY_PERMISSIONS, CRYPTO_OFFICER
    )
    planned("Create key vault", vault, None if mine else "grant", note="this tool's keys")
    key_name = key.versionless_id if key else f"{vault}/keys/{request.key_name}"
    planned("Create key", key.id if key else key_name, None if key else "create")
    who = principal or "the app's new service principal"
    step = "Grant the app's service principal the key"
    planned(step, vault, None if facts.key_access else "grant", note=f"key use by {who}")
    target = des_id(ours.subscription_id, request.resource_group, request.des_name)
    same = des is not None and key is not None and des_info(des).key_url == key.id
    verb = "create" if des is None else None if same else "adopt"
    planned("Create disk encryption set", target, verb)
    planned("Check both sides of the cross-tenant set", target, "verify")
