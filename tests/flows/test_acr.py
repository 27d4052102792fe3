"""The container registry flows end to end against the emulator: results and emulator state,
rules refused before any write, crash re-runs, throttling, rotation, revocation, firewall,
identity switch, and no secret in logs or artifacts."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from byok.errors import ConcurrentRun, ServiceRefused
from byok.validation import InvalidRequest
from emulator.faults import Fault
from emulator.server import Emulator
from flows.acr import (
    EncryptedRegistryRequest,
    FirewallRequest,
    RegistryRequest,
    RegistryTemplateRequest,
    RevokeRestoreRequest,
    RotateRegistryKeyRequest,
    SwitchIdentityRequest,
    create_encrypted_registry,
    create_encrypted_registry_from_template,
    registry_key_vault_firewall,
    revoke_and_restore_registry_key,
    rotate_registry_key_flow,
    show_registry_encryption,
    switch_registry_encryption_identity,
)
from tests.helpers import vault_parameters

REGISTRY_TYPE = "microsoft.containerregistry/registries"
IDENTITY_TYPE = "microsoft.managedidentity/userassignedidentities"


def request(block: str, **overrides: Any) -> EncryptedRegistryRequest:
    values: dict[str, Any] = {
        "azure_credentials_block": block,
        "resource_group": "rg-acr",
        "location": "westeurope",
        "registry_name": "acrbyok1",
        "identity_name": "acr-identity",
        "vault_name": "kv-acr",
        "key_name": "acr-key",
        "key_size": 2048,
        "automatic_rotation": False,
        "propagation_timeout_minutes": 0.5,
    }
    values.update(overrides)
    return EncryptedRegistryRequest(**values)


def registry_ref(block: str) -> dict[str, str]:
    return {
        "azure_credentials_block": block,
        "resource_group": "rg-acr",
        "registry_name": "acrbyok1",
    }


def stored(emulator: Emulator, type_name: str) -> list[dict]:
    return [r for r in emulator.arm.resources.values() if r["type"].lower() == type_name]


def kvp(emulator: Emulator) -> dict[str, Any]:
    (registry,) = stored(emulator, REGISTRY_TYPE)
    return registry["properties"]["encryption"]["keyVaultProperties"]


def versions(emulator: Emulator, key: str = "acr-key") -> list[Any]:
    (data,) = emulator.state.keyvault.vaults.values()
    return data.keys[key].versions


def writes(emulator: Emulator) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()
        if r.method in ("PUT", "PATCH", "DELETE") or r.path.endswith(("/create", "/rotate"))
    ]


def test_create_versioned_end_to_end(azure_block: str, emulator: Emulator) -> None:
    result = create_encrypted_registry(request(azure_block))
    registry = result.registry
    assert registry.login_server == "acrbyok1.azurecr.io"
    assert registry.key_id == registry.versioned_key_id
    (identity,) = stored(emulator, IDENTITY_TYPE)
    assert registry.identity_id == identity["id"] == result.identity_id
    assert registry.identity_client_id == identity["properties"]["clientId"]
    assert kvp(emulator)["versionedKeyIdentifier"] == registry.key_id
    (vault,) = stored(emulator, "microsoft.keyvault/vaults")
    assert vault["properties"]["enablePurgeProtection"] is True
    policy = next(
        p
        for p in vault["properties"]["accessPolicies"]
        if p["objectId"] == result.identity_principal_id
    )
    assert sorted(policy["permissions"]["keys"]) == ["get", "unwrapKey", "wrapKey"]


def test_rerun_after_a_crash_at_each_step(azure_block: str, emulator: Emulator) -> None:
    steps = [
        ("PUT", r"/userAssignedIdentities/acr-identity$"),
        ("PUT", r"/vaults/kv-acr$"),
        ("PUT", r"/accessPolicies/add$"),
        ("POST", r"/keys/acr-key/create$"),
        ("PUT", r"/registries/acrbyok1$"),
    ]
    for method, path in steps:
        emulator.faults.add(Fault("status", method=method, path=path, status=400, code="Crash"))
        with pytest.raises(Exception, match="Crash"):
            create_encrypted_registry(request(azure_block, automatic_rotation=True))
    result = create_encrypted_registry(request(azure_block, automatic_rotation=True))
    assert len(stored(emulator, REGISTRY_TYPE)) == len(stored(emulator, IDENTITY_TYPE)) == 1
    assert len(versions(emulator)) == 1
    assert result.registry.key_id == result.registry.versioned_key_id.rsplit("/", 1)[0]
    emulator.requests.clear()
    create_encrypted_registry(request(azure_block, automatic_rotation=True))
    assert writes(emulator) == []


def test_a_burst_of_429s_is_absorbed(azure_block: str, emulator: Emulator) -> None:
    emulator.faults.add(
        Fault("status", method="PUT", path="/registries/", status=429, retry_after=0.1, count=3)
    )
    create_encrypted_registry(request(azure_block))
    puts = [r.status for r in emulator.requests.find("PUT", "/registries/acrbyok1$")]
    assert puts == [429, 429, 429, 201]


def test_rules_refused_before_any_write(azure_block: str, emulator: Emulator, azure) -> None:
    azure.resources().resource_groups.create_or_update("rg-acr", {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.properties.enable_purge_protection = None
    azure.keyvault_management().vaults.begin_create_or_update("rg-acr", "kv-acr", params).result()
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="enable_purge_protection"):
        create_encrypted_registry(request(azure_block))
    azure.keyvault_management().vaults.begin_create_or_update(
        "rg-acr", "kv-ec", vault_parameters(emulator)
    ).result()
    vault = azure.keyvault_management().vaults.get("rg-acr", "kv-ec")
    azure.keys(str(vault.properties.vault_uri)).create_ec_key("acr-key")
    azure.container_registry().registries.begin_create(
        "rg-acr", "acrplain1", {"location": "westeurope", "sku": {"name": "Premium"}}
    ).result()
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="the key is EC"):
        create_encrypted_registry(request(azure_block, vault_name="kv-ec"))
    with pytest.raises(InvalidRequest, match="can only be enabled when a registry is created"):
        create_encrypted_registry(
            request(azure_block, vault_name="kv-new", registry_name="acrplain1")
        )
    with pytest.raises(ValueError, match="registry_name"):
        request(azure_block, registry_name="no-dashes")
    assert writes(emulator) == []


def test_template_flow(azure_block: str, emulator: Emulator) -> None:
    values = request(azure_block).model_dump(exclude={"vault_rbac"})
    result = create_encrypted_registry_from_template(
        RegistryTemplateRequest(**{**values, "automatic_rotation": True})
    )
    assert result.registry.key_id == result.registry.versioned_key_id.rsplit("/", 1)[0]
    assert len(stored(emulator, "microsoft.resources/deployments")) == 1
    (identity,) = stored(emulator, IDENTITY_TYPE)
    assert kvp(emulator)["identity"] == identity["properties"]["clientId"]


def test_show_and_rotate_versioned(azure_block: str, emulator: Emulator) -> None:
    created = create_encrypted_registry(request(azure_block))
    shown = show_registry_encryption(RegistryRequest(**registry_ref(azure_block)))
    assert shown.status == "enabled" and shown.key_rotation_enabled is False
    assert shown.versioned_key_identifier == created.registry.versioned_key_id
    rotated = rotate_registry_key_flow(
        RotateRegistryKeyRequest(
            **registry_ref(azure_block), timeout_minutes=0.2, poll_seconds=0.05
        )
    )
    assert rotated.versioned_key_identifier != created.registry.versioned_key_id
    assert rotated.last_key_rotation_timestamp
    assert kvp(emulator)["versionedKeyIdentifier"] == rotated.versioned_key_identifier
    assert [v.enabled for v in versions(emulator)] == [True, True]


def test_rotate_versionless_waits_for_pick_up(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.types[REGISTRY_TYPE].hooks.auto_rotation_seconds = 0.3  # type: ignore[attr-defined]
    create_encrypted_registry(request(azure_block, automatic_rotation=True))
    emulator.requests.clear()
    rotated = rotate_registry_key_flow(
        RotateRegistryKeyRequest(**registry_ref(azure_block), timeout_minutes=0.2, poll_seconds=0.1)
    )
    assert rotated.versioned_key_identifier.endswith(versions(emulator)[-1].version)
    assert not emulator.requests.find("PATCH", "/registries/acrbyok1$")


def test_revoke_and_restore(azure_block: str, emulator: Emulator) -> None:
    create_encrypted_registry(request(azure_block))
    emulator.faults.add(Fault("delayed-effect", effect="access-grant", seconds=1.0))
    result = revoke_and_restore_registry_key(RevokeRestoreRequest(**registry_ref(azure_block)))
    assert (result.revoked, result.restored) == ("KeyVaultAccessForbidden", "ok")
    refused = [r for r in emulator.requests.find("POST", "/importImage$") if r.status == 400]
    assert len(refused) >= 2, "the restored grant was not effective at first: retried"
    (vault,) = stored(emulator, "microsoft.keyvault/vaults")
    assert len(vault["properties"]["accessPolicies"]) == 2  # the tool's and the identity's
    (registry,) = stored(emulator, REGISTRY_TYPE)
    assert registry["_repositories"] == {"byok-probe:latest": "hello-world:latest"}


def test_firewall_scenario(azure_block: str, emulator: Emulator) -> None:
    create_encrypted_registry(request(azure_block))
    status = registry_key_vault_firewall(
        FirewallRequest(
            **registry_ref(azure_block),
            vault_name="kv-acr",
            key_name="acr-key-2",
            key_size=2048,
            operator_ip_rules=["127.0.0.1/32"],
            propagation_timeout_minutes=0.5,
        )
    )
    assert status.identity == "system" and "/keys/acr-key-2/" in str(status.key_identifier)
    (vault,) = stored(emulator, "microsoft.keyvault/vaults")
    acls = vault["properties"]["networkAcls"]
    assert (acls["defaultAction"], acls["bypass"]) == ("Deny", "AzureServices")


def test_switch_identity(azure_block: str, emulator: Emulator) -> None:
    created = create_encrypted_registry(request(azure_block))
    status = switch_registry_encryption_identity(
        SwitchIdentityRequest(
            **registry_ref(azure_block),
            old_identity_id=created.identity_id,
            new_identity_name="acr-identity-2",
            location="westeurope",
            propagation_timeout_minutes=0.5,
        )
    )
    (registry,) = stored(emulator, REGISTRY_TYPE)
    (new_id,) = registry["identity"]["userAssignedIdentities"]
    assert new_id.endswith("/acr-identity-2")
    assert status.identity == registry["identity"]["userAssignedIdentities"][new_id]["clientId"]


def test_no_secret_in_logs_or_artifacts(azure_block: str, emulator: Emulator) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
    from prefect.logging.handlers import APILogHandler

    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("prefect", "azure", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        state = create_encrypted_registry(request(azure_block), return_state=True)
        show = show_registry_encryption(
            RegistryRequest(**registry_ref(azure_block)), return_state=True
        )
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
    APILogHandler().flush()
    run_ids = [state.state_details.flow_run_id, show.state_details.flow_run_id]

    async def read() -> tuple[list[str], list[str]]:
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id={"any_": run_ids})  # type: ignore[arg-type]
            )
            artifacts = await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
            )
        return [log.message for log in logs], [str(a.data) for a in artifacts]

    logs, artifacts = asyncio.run(read())
    assert records and logs and artifacts
    assert any(
        "acr-encryption-status" in str(a) or "Encryption of registry" in a for a in artifacts
    )
    secret = emulator.identity.client_secret
    for text in [*records, *logs, *artifacts]:
        assert secret not in text


def test_rotation_rerun_after_a_crash_makes_one_version(
    azure_block: str, emulator: Emulator
) -> None:
    create_encrypted_registry(request(azure_block))
    emulator.requests.clear()
    emulator.faults.add(Fault("reset-after", method="POST", path=r"/keys/acr-key/create$"))
    emulator.faults.add(
        Fault("status", method="PATCH", path="/registries/acrbyok1$", status=400, code="Crash")
    )
    rotate = RotateRegistryKeyRequest(
        **registry_ref(azure_block), timeout_minutes=0.2, poll_seconds=0.05
    )
    with pytest.raises(ServiceRefused, match=r"/registries/acrbyok1: key rotation refused: Crash"):
        rotate_registry_key_flow(rotate)
    assert len(emulator.requests.find("POST", r"/keys/acr-key/create$")) == 1
    assert len(versions(emulator)) == 2  # made, its answer lost, the registry not updated
    rotated = rotate_registry_key_flow(rotate)
    assert len(versions(emulator)) == 2
    assert rotated.versioned_key_identifier.endswith("/" + versions(emulator)[-1].version)


@pytest.mark.slow
def test_two_identical_runs_make_one_registry(azure_block: str, emulator: Emulator) -> None:
    # the first run holds the registry while the second starts
    emulator.faults.add(Fault("latency", method="PUT", path="/registries/acrbyok1$", seconds=8))
    outcomes: dict[str, Any] = {}

    def run(label: str) -> None:
        try:
            outcomes[label] = create_encrypted_registry(request(azure_block))
        except Exception as exc:
            outcomes[label] = exc

    first = threading.Thread(target=run, args=("first",))
    first.start()
    deadline = time.monotonic() + 60
    while not emulator.requests.find("PUT", "/resourcegroups/rg-acr$"):
        assert time.monotonic() < deadline and first.is_alive()
        time.sleep(0.1)
    run("second")
    first.join(120)
    assert isinstance(outcomes["second"], ConcurrentRun), outcomes
    assert "/registries/acrbyok1: another run is working on" in str(outcomes["second"])
    assert not isinstance(outcomes["first"], Exception), outcomes
    assert len(stored(emulator, REGISTRY_TYPE)) == len(stored(emulator, IDENTITY_TYPE)) == 1
    assert len(versions(emulator)) == 1
