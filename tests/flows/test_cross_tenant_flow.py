"""prepare-cross-tenant-disk-encryption-set against the emulator with two tenants: the service
provider's (the home tenant, the flows' least-privileged principal) and a customer's (its own
subscription and principal holding the README's roles): state on both sides, a re-run that
writes nothing, a crash after each write then a re-run that makes one of each, every missing
piece named with its side, bad input refused before any write."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import (
    DiskEncryptionSetUpdate,
    DiskEncryptionSetUpdateProperties,
    KeyForDiskEncryptionSet,
)

from byok.cross_tenant_models import ChainFacts, CrossTenantBroken, missing_pieces
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from flows.cross_tenant import CrossTenantDesRequest, prepare_cross_tenant_disk_encryption_set
from tests import crash
from tests.conftest import emulator_credentials
from tests.flows.conftest import module_flows, roles_for
from tests.flows.refusals import refused, writes

CUSTOMER_BLOCK = "emulator-customer"
CUSTOMER_TENANT = "c0570e11-0000-4000-8000-0000c0570e11"
CUSTOMER_SUB = "c0570e11-0000-4000-8000-00000000c5b1"
ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
ROLE_ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"


@dataclass
class Customer:
    """The customer's tenant: the flow's principal there, and an administrator's clients."""

    tenant: str
    subscription: str
    principal: Principal
    admin: AzureClients


def add_customer(emulator: Emulator, flows: set[str]) -> Customer:
    """The customer tenant with fixed ids (the same after a reset), its subscription, the
    flow's principal with the README's roles there, and an Owner administrator."""
    state = emulator.state
    tenant = state.add_tenant(CUSTOMER_TENANT, name="customer")
    sub = state.add_subscription(tenant, name="customer prod", subscription_id=CUSTOMER_SUB)
    principal = state.add_service_principal(
        tenant, "customer-flows", client_id=f"{CUSTOMER_TENANT[:-4]}f10e", secret="customer-sp"
    )
    for role in roles_for(flows):
        state.grant_role(principal.object_id, role, f"/subscriptions/{sub}")
    admin = state.add_service_principal(
        tenant, "customer-admin", client_id=f"{CUSTOMER_TENANT[:-4]}ad01", secret="customer-admin"
    )
    for role in ("Owner", "Key Vault Administrator"):
        state.grant_role(admin.object_id, role, f"/subscriptions/{sub}")
    block = emulator_credentials(
        emulator,
        tenant_id=tenant,
        client_id=admin.client_id,
        client_secret=admin.secret,
        subscription_id=sub,
    )
    return Customer(tenant, sub, principal, AzureClients(block))


@pytest.fixture
def customer(emulator: Emulator, azure_block: str, request: pytest.FixtureRequest) -> Customer:
    """The customer's tenant and its saved credentials block (the flow's principal there)."""
    made = add_customer(emulator, module_flows(request.module))
    emulator_credentials(
        emulator,
        tenant_id=made.tenant,
        client_id=made.principal.client_id,
        client_secret=made.principal.secret,
        subscription_id=made.subscription,
    ).save(CUSTOMER_BLOCK, overwrite=True)
    return made


def xt_request(provider_block: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "provider_credentials_block": provider_block,
        "customer_credentials_block": CUSTOMER_BLOCK,
        "app_name": "isv-cmk",
        "resource_group": "rg-isv",
        "location": "westeurope",
        "identity_name": "isv-des-id",
        "des_name": "des-customer",
        "customer_resource_group": "rg-keys",
        "vault_name": "kv-customer",
        "key_name": "cmk",
        "key_size": 2048,
        "propagation_timeout_minutes": 0.5,
    }
    values.update(overrides)
    return values


def run(provider_block: str, **overrides: Any):
    return prepare_cross_tenant_disk_encryption_set(
        CrossTenantDesRequest(**xt_request(provider_block, **overrides))
    )


def resources(emulator: Emulator, type_name: str) -> list[dict[str, Any]]:
    return [r for r in emulator.arm.resources.values() if r["type"].lower() == type_name.lower()]


def graph_call(emulator: Emulator, clients: AzureClients, method: str, path: str) -> int:
    """A Graph request as the clients' principal (the test's own hand); its status."""
    token = clients.credential.get_token("https://graph.microsoft.com/.default").token
    answer = requests.request(
        method,
        f"{emulator.base_url}/v1.0{path}",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
    return answer.status_code


def chain_counts(emulator: Emulator) -> Counter[str]:
    """What a duplicate would show in, on both sides: ARM resources (role assignments
    included) and key versions, app registrations, federated credentials, service principals
    of each app, access policy entries."""
    counts = crash.state_counts(emulator)
    entra = emulator.state.entra
    for app in entra.apps.applications.values():
        counts[f"apps named {app.display_name}"] += 1
        counts[f"federated credentials of {app.display_name}"] += len(app.federated_credentials)
        for principal in entra.principals.values():
            if principal.client_id == app.app_id:
                counts[f"service principals of {app.display_name}"] += 1
    for vault in resources(emulator, "Microsoft.KeyVault/vaults"):
        counts["access policies"] += len(vault["properties"].get("accessPolicies") or [])
    return counts


def test_end_to_end_on_both_tenants_and_a_rerun_writes_nothing(
    azure_block: str, emulator: Emulator, customer: Customer
) -> None:
    result = run(azure_block)
    entra = emulator.state.entra
    app = entra.apps.by_app_id(result.app.app_id)
    assert app is not None and app.tenant_id == emulator.identity.tenant_id
    assert app.sign_in_audience == "AzureADMultipleOrgs"
    des = emulator.arm.get(result.disk_encryption_set.id)
    assert des is not None
    (identity_id,) = des["identity"]["userAssignedIdentities"]
    uai = emulator.arm.get(identity_id)
    assert uai is not None and identity_id == result.identity_id
    principal = uai["properties"]["principalId"]
    assert [(f["issuer"], f["subject"], f["audiences"]) for f in app.federated_credentials] == [
        (
            f"{emulator.base_url}/{emulator.identity.tenant_id}/v2.0",
            principal,
            ["api://AzureADTokenExchange"],
        )
    ]
    installed = entra.by_client_id(app.app_id, customer.tenant)
    assert installed is not None
    assert installed.object_id == result.customer_service_principal_id
    vault = emulator.arm.get(result.vault.id)
    assert vault is not None and vault["properties"]["tenantId"] == customer.tenant
    assert vault["properties"]["enablePurgeProtection"] is True
    assert result.vault.id.startswith(f"/subscriptions/{customer.subscription}/")
    grants = [
        a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
        for a in resources(emulator, ROLE_ASSIGNMENTS)
        if a["properties"]["principalId"] == installed.object_id
    ]
    assert grants == [ENCRYPTION_USER]
    props = des["properties"]
    assert props["federatedClientId"] == app.app_id
    assert props["activeKey"]["keyUrl"] == result.key.id
    assert props["provisioningState"] == "Succeeded"
    assert result.disk_encryption_set.principal_id == principal
    assert result.provider_tenant_id != result.customer_tenant_id == customer.tenant

    emulator.requests.clear()
    assert run(azure_block) == result
    assert writes(emulator) == 0, [
        f"{r.method} {r.path}" for r in emulator.requests.find() if r.method != "GET"
    ]
    assert run(azure_block, mode="check") == result
    assert writes(emulator) == 0


def test_access_policy_vault_gets_the_apps_policy(
    azure_block: str, emulator: Emulator, customer: Customer
) -> None:
    result = run(azure_block, vault_rbac=False)
    vault = emulator.arm.get(result.vault.id)
    assert vault is not None
    policy = next(
        p
        for p in vault["properties"]["accessPolicies"]
        if p["objectId"] == result.customer_service_principal_id
    )
    assert sorted(policy["permissions"]["keys"]) == ["get", "unwrapKey", "wrapKey"]
    assert policy["tenantId"] == customer.tenant


def test_each_missing_piece_is_named_with_its_side(
    azure_block: str, emulator: Emulator, customer: Customer
) -> None:
    provider = emulator.identity.tenant_id
    nothing = refused(
        prepare_cross_tenant_disk_encryption_set, xt_request(azure_block, mode="check")
    )
    assert f"service provider tenant '{provider}': no app registration named 'isv-cmk'" in nothing
    assert f"customer tenant '{customer.tenant}': no key vault 'kv-customer'" in nothing
    assert "no disk encryption set 'des-customer'" in nothing

    result = run(azure_block)
    sp = result.customer_service_principal_id
    emulator.requests.clear()
    (grant,) = [
        a for a in resources(emulator, ROLE_ASSIGNMENTS) if a["properties"]["principalId"] == sp
    ]
    customer.admin.authorization().role_assignments.delete_by_id(grant["id"])
    revoked = refused(
        prepare_cross_tenant_disk_encryption_set, xt_request(azure_block, mode="check")
    )
    assert revoked.endswith(
        f"customer tenant '{customer.tenant}': service principal {sp} of app 'isv-cmk' "
        f"({result.app.app_id}) has no key access on vault 'kv-customer' (get, wrapKey, "
        "unwrapKey, or Key Vault Crypto Service Encryption User)"
    ), revoked
    assert writes(emulator) == 1  # the test's own revocation

    assert run(azure_block) == result  # set-up grants it again
    grants = [
        a for a in resources(emulator, ROLE_ASSIGNMENTS) if a["properties"]["principalId"] == sp
    ]
    assert len(grants) == 1

    provider_admin = AzureClients(emulator_credentials(emulator))
    app = f"/applications/{result.app.object_id}"
    assert (
        graph_call(
            emulator, provider_admin, "DELETE", f"{app}/federatedIdentityCredentials/isv-des-id"
        )
        == 204
    )
    # Azure's own check refuses the set's key now (re-applied by the provider's Owner)
    update = DiskEncryptionSetUpdate(
        properties=DiskEncryptionSetUpdateProperties(
            active_key=KeyForDiskEncryptionSet(key_url=result.key.id)
        )
    )
    with pytest.raises(HttpResponseError, match="AADSTS70021"):
        provider_admin.compute().disk_encryption_sets.begin_update(
            "rg-isv", "des-customer", update
        ).result()
    unfederated = refused(
        prepare_cross_tenant_disk_encryption_set, xt_request(azure_block, mode="check")
    )
    assert (
        f"service provider tenant '{provider}': app 'isv-cmk' ({result.app.app_id}) has no "
        "federated credential for identity 'isv-des-id'" in unfederated
    ), unfederated
    assert run(azure_block) == result
    assert len(emulator.state.entra.apps.by_app_id(result.app.app_id).federated_credentials) == 1

    assert graph_call(emulator, customer.admin, "DELETE", f"/servicePrincipals/{sp}") == 204
    uninstalled = refused(
        prepare_cross_tenant_disk_encryption_set, xt_request(azure_block, mode="check")
    )
    assert (
        f"customer tenant '{customer.tenant}': app 'isv-cmk' ({result.app.app_id}) is not "
        "installed (no service principal)" in uninstalled
    )


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        (
            {"vault_location": "northeurope"},
            "location",
            "a cross-tenant disk encryption set must be in its key's region (northeurope)",
        ),
        ({"des_name": "bad name!"}, "des_name", "disk encryption set names"),
        ({"identity_name": "x"}, "identity_name", "identity names"),
        ({"vault_name": "kv_bad"}, "vault_name", "key vault names"),
        ({"app_name": " "}, "app_name", "not blank"),
    ],
)
def test_bad_input_is_refused_before_any_write(
    azure_block: str,
    emulator: Emulator,
    customer: Customer,
    overrides: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    emulator.requests.clear()
    message = refused(
        prepare_cross_tenant_disk_encryption_set, xt_request(azure_block, **overrides)
    )
    assert message.startswith(f"{field} = ") and rule in message, message
    assert writes(emulator) == 0


def test_an_existing_vault_elsewhere_or_one_tenant_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, customer: Customer
) -> None:
    customer.admin.resources().resource_groups.create_or_update(
        "rg-keys", {"location": "northeurope"}
    )
    run(azure_block, vault_location="northeurope", location="northeurope", des_name="des-north")
    emulator.requests.clear()
    with pytest.raises(
        InvalidRequest, match=r"location = 'westeurope': a cross-tenant .*\(northeurope\)"
    ):
        run(azure_block)  # the vault exists in northeurope: its region wins over vault_location
    with pytest.raises(
        InvalidRequest, match=r"customer_credentials_block = .*in the service provider's tenant"
    ):
        run(azure_block, customer_credentials_block=azure_block)
    assert writes(emulator) == 0


def test_a_customer_block_without_the_rbac_role_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, customer: Customer
) -> None:
    state = emulator.state
    assert state is not None
    only = state.add_service_principal(customer.tenant, "customer-contributor-only")
    state.grant_role(only.object_id, "Contributor", f"/subscriptions/{customer.subscription}")
    emulator_credentials(
        emulator,
        tenant_id=customer.tenant,
        client_id=only.client_id,
        client_secret=only.secret,
        subscription_id=customer.subscription,
    ).save("customer-contributor-only", overwrite=True)
    emulator.requests.clear()
    flow = prepare_cross_tenant_disk_encryption_set
    message = refused(
        flow, xt_request(azure_block, customer_credentials_block="customer-contributor-only")
    )
    assert message == (
        f"/subscriptions/{customer.subscription}: these credentials lack "
        "Microsoft.Authorization/roleAssignments/write: grant the roles the README's "
        "permissions table lists for prepare-cross-tenant-disk-encryption-set"
    ), message
    assert writes(emulator) == 0


def test_missing_pieces_in_order_of_the_procedure() -> None:
    facts = ChainFacts(
        provider_tenant_id="p",
        customer_tenant_id="c",
        app_name="a",
        identity_name="i",
        issuer="https://login.microsoftonline.com/p/v2.0",
        vault_name="v",
        key_name="k",
        des_name="d",
    )
    assert missing_pieces(facts) == [
        "service provider tenant 'p': no app registration named 'a'",
        "service provider tenant 'p': no user-assigned identity 'i'",
        "customer tenant 'c': no key vault 'v'",
        "service provider tenant 'p': no disk encryption set 'd'",
    ]
    broken = CrossTenantBroken("/x", missing_pieces(facts))
    assert str(broken).startswith("/x: service provider tenant 'p': no app") and broken.missing


def crash_matrix(
    emulator: Emulator,
    azure_block: str,
    reset_emulator: Callable[[], None],
    flows: set[str],
    failures: dict[str, Callable[[crash.Write], Any]],
    only: Callable[[crash.Write], bool],
) -> None:
    """Each write of a clean run that `only` keeps, under each failure: after a re-run, one
    of each thing on both sides."""

    def fresh() -> None:
        reset_emulator()
        add_customer(emulator, flows)

    clean = crash.clean_run(emulator, fresh, lambda: run(azure_block), chain_counts)
    assert clean.counts["apps named isv-cmk"] == 1
    assert clean.counts["federated credentials of isv-cmk"] == 1
    assert clean.counts["service principals of isv-cmk"] == 1
    chosen = [w for w in clean.writes if only(w)]
    outcomes = crash.matrix(
        emulator, fresh, lambda: run(azure_block), clean, failures, chosen, chain_counts
    )
    summary = crash.summary(outcomes)
    assert summary == {
        "scenarios": len(chosen) * len(failures),
        "faults that never fired": 0,
        "duplicates": 0,
        "needed a re-run": summary["needed a re-run"],
        "not completed": 0,
    }, crash.report(outcomes)


def test_a_lost_answer_to_each_new_kind_of_write_then_a_rerun_makes_one_of_each(
    azure_block: str,
    emulator: Emulator,
    customer: Customer,
    reset_emulator: Callable[[], None],
    request: pytest.FixtureRequest,
) -> None:
    """The writes this flow adds (Graph: app, federated credential, service principal; the
    identity; the federated set), each answer lost once."""
    new = ("/v1.0/", "/userAssignedIdentities/", "/diskEncryptionSets/")
    kept: list[str] = []

    def only(write: crash.Write) -> bool:
        if any(part in write.path for part in new):
            kept.append(str(write))
            return True
        return False

    lost_once = {"lost-once": crash.FAILURES["lost-once"]}
    crash_matrix(
        emulator, azure_block, reset_emulator, module_flows(request.module), lost_once, only
    )
    assert {w.split(" ", 1)[0] + " " + w.rsplit("/", 1)[-1] for w in kept} >= {
        "POST applications",
        "POST federatedIdentityCredentials",
        "POST servicePrincipals",
        "PUT isv-des-id",
        "PUT des-customer",
    }, kept


@pytest.mark.slow
def test_a_crash_around_every_write_then_a_rerun_makes_one_of_each(
    azure_block: str,
    emulator: Emulator,
    customer: Customer,
    reset_emulator: Callable[[], None],
    request: pytest.FixtureRequest,
) -> None:
    crash_matrix(
        emulator,
        azure_block,
        reset_emulator,
        module_flows(request.module),
        crash.FAILURES,
        lambda write: True,
    )
