"""The revocation drill against the emulator: a key protecting a VM (through a disk
encryption set) and a registry; each method proves the failure Azure reports and the
recovery; a crashed run's revocation is restored by the next run; refusals write nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest
from azure.mgmt.containerregistry.models import (
    EncryptionProperty,
    IdentityProperties,
    KeyVaultProperties,
    Registry,
    Sku,
    UserIdentityProperties,
)
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)

from blocks.azure import AzureCredentials
from byok.drill import GRANTS_TAG, REVOKED_TAG, Method, RevocationDrillRequest
from byok.errors import InvalidRequest, VerificationFailed
from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from emulator.throttling import ComputePolicy, Limit, Limits, Throttle
from flows.revocation_drill import revocation_drill
from tasks.revocation import revoke_key_access
from tests.encrypted_vm import GROUP, encrypted_vm, power_state

# Removing grants takes longer (the restored grant propagates): a slow case.
METHODS = [Method.DISABLE_KEY, pytest.param(Method.REMOVE_GRANT, marks=pytest.mark.slow)]


def _policy(
    azure: AzureClients, emulator: Emulator, principal: str, permissions: list[str]
) -> None:
    entry = AccessPolicyEntry(
        tenant_id=emulator.identity.tenant_id,
        object_id=principal,
        permissions=Permissions(keys_property=permissions),
    )
    azure.keyvault_management().vaults.update_access_policy(
        GROUP,
        "kv-des-we",
        "add",
        VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[entry])
        ),
    )


@pytest.fixture
def drilled(
    azure: AzureClients, emulator: Emulator, azure_block: str, flow_principal: Principal
) -> dict[str, Any]:
    """A running VM on a set and a Premium registry, both encrypted with key `k`."""
    vm_id, des_id = encrypted_vm(azure, emulator)
    des = azure.compute().disk_encryption_sets.get(GROUP, "des-we")
    key_url = str(des.active_key.key_url)
    uai = azure.msi().user_assigned_identities.create_or_update(
        GROUP, "acr-id", {"location": "westeurope"}
    )
    _policy(azure, emulator, str(uai.principal_id), ["get", "wrapKey", "unwrapKey"])
    _policy(azure, emulator, flow_principal.object_id, ["get", "list", "update"])
    registry = (
        azure.container_registry()
        .registries.begin_create(
            GROUP,
            "acrdrill1",
            Registry(
                location="westeurope",
                sku=Sku(name="Premium"),
                identity=IdentityProperties(
                    type="UserAssigned",
                    user_assigned_identities={uai.id: UserIdentityProperties()},
                ),
                encryption=EncryptionProperty(
                    status="enabled",
                    key_vault_properties=KeyVaultProperties(
                        key_identifier=key_url, identity=uai.client_id
                    ),
                ),
            ),
        )
        .result()
    )
    return {
        "block": azure_block,
        "key": key_url.rsplit("/", 1)[0],
        "vm": vm_id,
        "des": des_id,
        "registry": str(registry.id),
        "principals": {str(des.identity.principal_id), str(uai.principal_id)},
        "vault_url": key_url.split("/keys/")[0],
    }


def drill(setup: dict[str, Any], **overrides: Any):
    return revocation_drill(
        RevocationDrillRequest(
            azure_credentials_block=setup["block"],
            key_id=setup["key"],
            **{"confirm": "k", "timeout_minutes": 0.2, **overrides},
        )
    )


def key_versions(azure: AzureClients, setup: dict[str, Any]) -> list[Any]:
    return list(azure.keys(setup["vault_url"] + "/").list_properties_of_key_versions("k"))


def assert_restored(azure: AzureClients, emulator: Emulator, setup: dict[str, Any]) -> None:
    """Every version enabled, no drill record left, every grant back, the VM running."""
    for props in key_versions(azure, setup):
        assert props.enabled
        assert not {t for t in props.tags or {} if t.startswith((REVOKED_TAG, GRANTS_TAG))}
    vault = azure.keyvault_management().vaults.get(GROUP, "kv-des-we")
    granted = {p.object_id for p in vault.properties.access_policies}
    assert setup["principals"] <= granted
    assert power_state(azure)[0] == "PowerState/running"


@pytest.mark.parametrize("method", METHODS)
def test_drill_proves_failure_and_recovery(
    azure: AzureClients, emulator: Emulator, drilled: dict[str, Any], method: Method
) -> None:
    result = drill(drilled, method=method)
    rows = {r.resource_id.lower(): r for r in result.rows}
    vm, registry = rows[drilled["vm"].lower()], rows[drilled["registry"].lower()]
    assert vm.verdict == registry.verdict == "proved"
    assert vm.revoked.state.startswith("PowerState/stopped")
    expected = "KeyVaultKeyDisabled" if method is Method.DISABLE_KEY else "KeyVaultAccessForbidden"
    assert expected in vm.revoked.state
    assert vm.restored.state == "PowerState/running"
    assert (registry.revoked.state, registry.restored.state) == ("KeyVaultAccessForbidden", "ok")
    assert rows[drilled["des"].lower()].verdict.startswith("not observable")
    assert result.revoked_at <= vm.revoked.at <= result.restored_at <= vm.restored.at
    if method is Method.DISABLE_KEY:
        assert len(result.revocation.versions) == 1 and not result.revocation.principals
    else:
        assert set(result.revocation.principals) == drilled["principals"]
    assert result.restored_leftover is None
    assert_restored(azure, emulator, drilled)
    starts = emulator.requests.find("POST", r"/virtualMachines/vm1/start$")
    assert starts and starts[-1].status == 200  # Azure does not restart the VM by itself


@pytest.mark.parametrize("method", METHODS)
def test_a_rerun_after_a_crash_restores_first(
    azure: AzureClients, emulator: Emulator, drilled: dict[str, Any], method: Method
) -> None:
    """A run that died between revoke and restore left the key revoked (recorded on the key);
    the next run restores that before anything else, then drills."""
    credentials = AzureCredentials.load_saved(drilled["block"])
    principals = sorted(drilled["principals"]) if method is Method.REMOVE_GRANT else []
    revoke_key_access(credentials, drilled["key"], method, principals, [])  # then it died
    if method is Method.DISABLE_KEY:
        assert not any(p.enabled for p in key_versions(azure, drilled))
    result = drill(drilled, method=method)
    assert result.restored_leftover is not None
    assert result.restored_leftover.method is method
    assert {r.verdict for r in result.rows} == {
        "proved",
        "not observable (Azure reports the failure on the resources that use it)",
    }
    assert_restored(azure, emulator, drilled)


@pytest.mark.parametrize("confirm", ["", "K", "https://127.0.0.1:1/keys/k"])
def test_no_confirmation_is_refused_before_any_call(
    prefect_harness: None, emulator: Emulator, confirm: str
) -> None:
    emulator.requests.clear()
    setup = {"block": "never-loaded", "key": "https://127.0.0.1:1/keys/k"}
    with pytest.raises(InvalidRequest, match="must be the key's name 'k'") as refused:
        drill(setup, confirm=confirm)
    assert refused.value.field == "confirm"
    assert emulator.requests.find() == []


def test_too_many_dependents_is_refused_before_any_write(
    azure: AzureClients, emulator: Emulator, drilled: dict[str, Any]
) -> None:
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="the key has 5 dependents") as refused:
        drill(drilled, max_dependents=4)  # VM, disk, set, image version, registry
    assert refused.value.field == "max_dependents"
    writes = [r for r in emulator.requests.find() if r.method in ("PATCH", "PUT", "POST")]
    assert [r for r in writes if "/keys/" in r.path or "/start" in r.path] == []
    assert all(p.enabled for p in key_versions(azure, drilled))


@pytest.mark.slow
def test_a_dependent_not_proved_fails_the_run_and_the_key_is_restored(
    azure: AzureClients, emulator: Emulator, drilled: dict[str, Any]
) -> None:
    """A VM already stopped proves nothing: the run ends Failed naming it, the VM is left
    stopped (not started by the drill), the key is restored."""
    azure.compute().virtual_machines.begin_power_off(GROUP, "vm1").result()
    reason = "vm1 (failed: not healthy before the drill (PowerState/stopped))"
    with pytest.raises(VerificationFailed, match=re.escape(reason)):
        drill(drilled)
    assert power_state(azure)[0] == "PowerState/stopped"
    assert not emulator.requests.find("POST", r"/virtualMachines/vm1/start$")
    for props in key_versions(azure, drilled):
        assert props.enabled and REVOKED_TAG not in (props.tags or {})


def test_the_drill_waits_out_computes_vm_throttling(
    azure: AzureClients, emulator: Emulator, drilled: dict[str, Any]
) -> None:
    """Compute refuses a VM's reads past its bucket (429 OperationNotAllowed, Retry-After):
    the drill's reads of the VM wait and go on; the drill proves and restores as before."""
    reads = ComputePolicy("LowCostGet", Limit(2, 1.0), Limit(24_000, 8_000 / 60))
    emulator.requests.clear()
    emulator.throttle = Throttle(Limits(compute=(reads,)))  # a VM: 2 reads, then 1 a second
    try:
        result = drill(drilled)
    finally:
        emulator.throttle = None
    refused = [r for r in emulator.requests.find() if r.status == 429]
    assert refused and {r.bucket.rsplit("/", 1)[1] for r in refused} == {"LowCostGet"}
    assert {r.verdict for r in result.rows} == {
        "proved",
        "not observable (Azure reports the failure on the resources that use it)",
    }
    assert_restored(azure, emulator, drilled)
