"""Confidential VMs with customer keys end to end against the emulator: the key, the
orchestrator's grant and the set prepared (access-policy vault, RBAC vault, managed HSM); the
offline rotation (every VM on the set deallocated, the key changed, only the VMs that were
running started again), its plan and window refused before any write, and crashes at each
step finished by a re-run."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from azure.mgmt.keyvault.models import ManagedHsm, Sku

from byok.confidential_vm_models import (
    HSM_RELEASE_USER,
    MEASURED_TAG,
    ORCHESTRATOR_APP_ID,
    RECORD_TAG,
    RotationRecord,
    recorded_tags,
    stop_start_seconds,
    without_record,
)
from byok.errors import ByokError
from byok.outcomes import Plan
from byok.rotation import ROTATION_TAG
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.authorization.roles import role_by_definition_id
from emulator.services.entra.models import Principal
from flows.confidential_vm import (
    ConfidentialRotationRequest,
    ConfidentialVmEncryptionRequest,
    ConfidentialVmEncryptionResult,
    ConfidentialVmSpec,
    prepare_confidential_vm_encryption,
    rotate_confidential_vm_key,
)
from tests.emulator.test_confidential import confidential_vm
from tests.emulator.test_managed_hsm import SERVICE_ENCRYPTION_USER, activated_hsm
from tests.flows.test_managed_hsm_flows import grants as hsm_grants
from tests.flows.test_managed_hsm_flows import key_versions as hsm_key_versions
from tests.flows.test_managed_hsm_flows import operator_roles, wrapping_keys
from tests.helpers import gallery_image, managed_image, vault_parameters

GROUP = "rg-cvm"
AUTHORITY = "https://sharedweu.weu.attest.azure.net"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYOK test"


def prepare_request(block: str) -> ConfidentialVmEncryptionRequest:
    return ConfidentialVmEncryptionRequest(
        azure_credentials_block=block,
        resource_group=GROUP,
        location="westeurope",
        vault_name="kv-cvm",
        key_name="cvm-key",
        key_size=2048,
        attestation_authority=AUTHORITY,
        des_name="des-cvm",
        propagation_timeout_minutes=0.5,
    )


def rotation(block: str, **overrides: Any) -> ConfidentialRotationRequest:
    values: dict[str, Any] = {
        "azure_credentials_block": block,
        "resource_group": GROUP,
        "des_name": "des-cvm",
        "maintenance_window_minutes": 30,
        "rotation_id": "r1",
        "timeout_minutes": 0.5,
        "poll_seconds": 0.05,
    }
    values.update(overrides)
    return ConfidentialRotationRequest(**values)


def writes(emulator: Emulator) -> list[str]:
    """The write requests served, token requests aside."""
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()
        if r.method in WRITES and "/oauth2/" not in r.path and not r.path.endswith("/token")
    ]


def power(azure: AzureClients, name: str) -> str:
    view = azure.compute().virtual_machines.get(GROUP, name, expand="instanceView").instance_view
    return next(s.code for s in view.statuses if s.code.startswith("PowerState/")).split("/")[1]


def set_state(emulator: Emulator, des_id: str) -> dict[str, Any]:
    stored = emulator.arm.get(des_id)
    assert stored is not None
    return stored


def key_versions(emulator: Emulator) -> list[Any]:
    (vault,) = emulator.state.keyvault.vaults.values()
    return vault.keys["cvm-key"].versions


def image_version(azure: AzureClients, confidential: bool = True) -> str:
    """A gallery image version (made by the test's own hand), its definition allowed for
    confidential VMs when `confidential`."""
    source = managed_image(azure, "westeurope", group=GROUP, luns=())
    gallery_image(azure, GROUP)
    compute = azure.compute()
    if confidential:
        definition = compute.gallery_images.get(GROUP, "g1", "img")
        definition.features = [{"name": "SecurityType", "value": "ConfidentialVmSupported"}]
        compute.gallery_images.begin_create_or_update(GROUP, "g1", "img", definition).result()
    version = compute.gallery_image_versions.begin_create_or_update(
        GROUP,
        "g1",
        "img",
        "1.0.0",
        {
            "location": "westeurope",
            "properties": {
                "publishingProfile": {"targetRegions": [{"name": "westeurope"}]},
                "storageProfile": {"source": {"id": source}},
            },
        },
    ).result()
    return str(version.id)


def with_vm(
    request: ConfidentialVmEncryptionRequest, image: str
) -> ConfidentialVmEncryptionRequest:
    vm = ConfidentialVmSpec(vm_name="cvm1", image_version_id=image, ssh_public_key=SSH_KEY)
    return request.model_copy(update={"vm": vm})


@pytest.fixture
def prepared(azure_block: str, azure: AzureClients) -> ConfidentialVmEncryptionResult:
    """The flow's key, grant and set, and cvm1 on the set (running)."""
    asked = with_vm(prepare_request(azure_block), image_version(azure))
    return prepare_confidential_vm_encryption(asked)


@pytest.fixture
def two_vms(azure: AzureClients, prepared: ConfidentialVmEncryptionResult) -> str:
    """cvm1 running (made by the flow) and cvm2 deallocated (by the test's own hand) on the
    prepared set; returns the set's id."""
    des_id = prepared.disk_encryption_set.id
    image = azure.compute().gallery_image_versions.get(GROUP, "g1", "img", "1.0.0")
    confidential_vm(azure, "cvm2", des_id, str(image.id)).result()
    azure.compute().virtual_machines.begin_deallocate(GROUP, "cvm2").result()
    return des_id


def test_prepare_makes_the_key_the_grant_and_the_set(
    azure_block: str, emulator: Emulator, prepared: ConfidentialVmEncryptionResult
) -> None:
    des = prepared.disk_encryption_set
    assert des.encryption_type == "ConfidentialVmEncryptedWithCustomerKey"
    vault = emulator.arm.get(prepared.vault.id)
    assert vault is not None and vault["properties"]["sku"]["name"].lower() == "premium"
    (version,) = key_versions(emulator)
    assert (version.kty, version.exportable) == ("RSA-HSM", True)
    policy = json.loads(base64.urlsafe_b64decode(version.release_policy["data"] + "=="))
    assert policy["anyOf"][0]["authority"] == AUTHORITY
    assert policy["anyOf"][0]["allOf"] == [
        {"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"}
    ]
    orchestrator = emulator.state.entra.by_client_id(
        ORCHESTRATOR_APP_ID, emulator.identity.tenant_id
    )
    assert orchestrator is not None and prepared.orchestrator_object_id == orchestrator.object_id
    grants = {
        p["objectId"]: p["permissions"]["keys"] for p in vault["properties"]["accessPolicies"]
    }
    assert sorted(grants[orchestrator.object_id]) == ["get", "release"]
    assert sorted(grants[des.principal_id]) == ["get", "unwrapKey", "wrapKey"]
    assert set_state(emulator, des.id)["properties"]["activeKey"]["keyUrl"] == prepared.key.id
    vm = emulator.arm.get(str(prepared.vm_id))
    assert (
        vm is not None and vm["properties"]["securityProfile"]["securityType"] == "ConfidentialVM"
    )
    os_disk = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["securityProfile"]
    assert os_disk["diskEncryptionSet"]["id"] == des.id

    emulator.requests.clear()
    image = vm["properties"]["storageProfile"]["imageReference"]["id"]
    again = prepare_confidential_vm_encryption(with_vm(prepare_request(azure_block), image))
    # nothing made again: the set's key is only re-applied as it is (an idempotent PATCH)
    assert again == prepared and [w for w in writes(emulator) if w[:5] in ("PUT /", "POST ")] == []


def test_a_key_without_the_release_policy_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    azure.resources().resource_groups.create_or_update(GROUP, {"location": "westeurope"})
    params = vault_parameters(emulator)
    params.properties.sku = Sku(family="A", name="premium")
    vaults = azure.keyvault_management().vaults
    vault = vaults.begin_create_or_update(GROUP, "kv-cvm", params).result()
    keys = azure.keys(str(vault.properties.vault_uri))
    keys.create_rsa_key("cvm-key", size=2048, hardware_protected=True)
    emulator.requests.clear()
    with pytest.raises(
        InvalidRequest,
        match="key_name 'cvm-key' = 'RSA-HSM': a confidential-VM set needs an exportable RSA-HSM",
    ):
        prepare_confidential_vm_encryption(prepare_request(azure_block))
    assert writes(emulator) == []


def test_an_image_not_made_for_confidential_vms_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    image = image_version(azure, confidential=False)
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match=r"vm\.image_version_id = .*SecurityType is None"):
        prepare_confidential_vm_encryption(with_vm(prepare_request(azure_block), image))
    assert writes(emulator) == []


def role_grants(emulator: Emulator, principal: str) -> list[tuple[str, str]]:
    """(scope, role name) of the principal's Azure role assignments."""
    return sorted(
        (r["properties"]["scope"], str(role.name))
        for r in list(emulator.arm.resources.values())
        if r["type"] == "Microsoft.Authorization/roleAssignments"
        and r["properties"]["principalId"] == principal
        and (role := role_by_definition_id(r["properties"]["roleDefinitionId"])) is not None
    )


def test_prepare_and_rotate_on_an_rbac_vault_granting_release_on_the_key(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    asked = with_vm(prepare_request(azure_block), image_version(azure))
    lost = emulator.faults.add(  # the orchestrator's grant is made, its answer lost
        Fault("reset-after", method="PUT", path=r"/keys/cvm-key/providers/.*/roleAssignments/")
    )
    prepared = prepare_confidential_vm_encryption(asked.model_copy(update={"vault_rbac": True}))
    assert lost.fired == 1
    vault = emulator.arm.get(prepared.vault.id)
    assert vault is not None and vault["properties"]["enableRbacAuthorization"] is True
    assert vault["properties"]["sku"]["name"].lower() == "premium"
    assert vault["properties"]["accessPolicies"] == []
    key_scope = f"{prepared.vault.id}/keys/cvm-key"
    assert role_grants(emulator, prepared.orchestrator_object_id) == [
        (key_scope, "Key Vault Crypto Service Release User")
    ]
    assert role_grants(emulator, prepared.disk_encryption_set.principal_id) == [
        (prepared.vault.id, "Key Vault Crypto Service Encryption User")
    ]
    assert prepared.vm_id is not None
    emulator.requests.clear()
    image = asked.vm.image_version_id if asked.vm else ""
    again = with_vm(prepare_request(azure_block), image).model_copy(update={"vault_rbac": True})
    assert prepare_confidential_vm_encryption(again) == prepared
    assert [w for w in writes(emulator) if w[:5] in ("PUT /", "POST ")] == []

    done = rotate_confidential_vm_key(rotation(azure_block))
    assert done.to_stop == done.to_start == [f"{GROUP}/cvm1"] and power(azure, "cvm1") == "running"
    stored = set_state(emulator, prepared.disk_encryption_set.id)
    assert stored["properties"]["activeKey"]["keyUrl"] == done.new_key != prepared.key.id
    # the grant is on the key, so it covers the new version: none made again
    assert len(role_grants(emulator, prepared.orchestrator_object_id)) == 1


@pytest.fixture
def cvm_hsm(azure: AzureClients, emulator: Emulator, flow_principal: Principal) -> ManagedHsm:
    """An activated HSM hsm1 (group rg, westeurope) with purge protection, this tool holding
    its local roles."""
    hsm = activated_hsm(azure, emulator, wrapping_keys())
    operator_roles(azure, emulator, hsm, flow_principal.object_id)
    hsm.properties.enable_purge_protection = True
    return (
        azure.keyvault_management().managed_hsms.begin_create_or_update("rg", "hsm1", hsm).result()
    )


def hsm_request(block: str) -> ConfidentialVmEncryptionRequest:
    return prepare_request(block).model_copy(
        update={
            "key_store": "managed-hsm",
            "vault_name": None,
            "hsm_name": "hsm1",
            "hsm_resource_group": "rg",
        }
    )


def test_prepare_and_rotate_on_a_managed_hsm(
    azure_block: str, emulator: Emulator, azure: AzureClients, cvm_hsm: ManagedHsm
) -> None:
    asked = with_vm(hsm_request(azure_block), image_version(azure))
    prepared = prepare_confidential_vm_encryption(asked)
    assert prepared.vault.kind == "managed-hsm" and prepared.vault.id == cvm_hsm.id
    (version,) = hsm_key_versions(emulator, cvm_hsm, "cvm-key")
    assert (version.kty, version.exportable, bool(version.release_policy)) == (
        "RSA-HSM",
        True,
        True,
    )
    assert hsm_grants(emulator, cvm_hsm, prepared.orchestrator_object_id) == [
        ("/keys/cvm-key", HSM_RELEASE_USER)
    ]
    des = prepared.disk_encryption_set
    assert hsm_grants(emulator, cvm_hsm, des.principal_id) == [
        ("/keys/cvm-key", SERVICE_ENCRYPTION_USER)
    ]
    assert power(azure, "cvm1") == "running"

    done = rotate_confidential_vm_key(rotation(azure_block))
    assert done.to_stop == done.to_start == [f"{GROUP}/cvm1"]
    stored = set_state(emulator, des.id)
    assert stored["properties"]["activeKey"]["keyUrl"] == done.new_key != prepared.key.id
    new = hsm_key_versions(emulator, cvm_hsm, "cvm-key")[-1]
    assert (new.kty, new.exportable, new.release_policy) == (
        "RSA-HSM",
        True,
        version.release_policy,
    )
    assert power(azure, "cvm1") == "running"
    # the grants are on the key, so they cover its new version: none made again
    assert len(hsm_grants(emulator, cvm_hsm, prepared.orchestrator_object_id)) == 1


def test_an_hsm_without_purge_protection_is_refused_before_any_write(
    azure_block: str, emulator: Emulator, azure: AzureClients, flow_principal: Principal
) -> None:
    hsm = activated_hsm(azure, emulator, wrapping_keys())
    operator_roles(azure, emulator, hsm, flow_principal.object_id)
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match="hsm_name = 'hsm1': key release needs purge prot"):
        prepare_confidential_vm_encryption(hsm_request(azure_block))
    assert writes(emulator) == []


def test_the_record_packs_vms_into_tag_values_and_reads_back() -> None:
    running = [f"rg-{i:02d}/{'v' * 60}{i:02d}" for i in range(12)]
    record = RotationRecord(rotation_id="r1", running=running)
    tags = record.to_tags()
    assert all(len(v) <= 256 for v in tags.values()) and len(tags) > 2
    assert RotationRecord.from_tags({**tags, "owner": "x"}) == record
    assert without_record({**tags, "owner": "x"}) == {"owner": "x"}
    assert stop_start_seconds({MEASURED_TAG: "420"}, 15) == 420
    assert stop_start_seconds({}, 15) == 900
    crowded = {f"t{i}": "x" for i in range(49)}
    with pytest.raises(InvalidRequest, match="a resource holds at most 50"):
        recorded_tags(crowded, record)


def test_rotation_stops_all_and_starts_again_only_the_running_vm(
    azure_block: str, emulator: Emulator, azure: AzureClients, two_vms: str
) -> None:
    before = set_state(emulator, two_vms)["properties"]["activeKey"]["keyUrl"]
    emulator.requests.clear()
    plan = rotate_confidential_vm_key(rotation(azure_block, plan_only=True))
    assert isinstance(plan, Plan) and plan.flow == "rotate-confidential-vm-key"
    assert plan.steps[0].note == f"VMs on the set: {GROUP}/cvm1 running, {GROUP}/cvm2 deallocated"
    assert [(s.verb, s.resource) for s in plan.steps if s.verb in ("stop", "start")] == [
        ("stop", f"{GROUP}/cvm1"),
        ("start", f"{GROUP}/cvm1"),
    ]
    short = rotation(azure_block, maintenance_window_minutes=10, stop_start_estimate_minutes=12)
    with pytest.raises(InvalidRequest, match=r"maintenance_window_minutes = 10\.0: shorter than"):
        rotate_confidential_vm_key(short)
    assert writes(emulator) == []

    for method, path in (("POST", r"/keys/cvm-key/create$"), ("PATCH", r"/des-cvm$")):
        emulator.faults.add(Fault("reset-after", method=method, path=path))  # answer lost once
    done = rotate_confidential_vm_key(rotation(azure_block))
    assert all(f.fired for f in emulator.faults.list())
    stored = set_state(emulator, two_vms)
    assert stored["properties"]["activeKey"]["keyUrl"] == done.new_key != before
    assert len(key_versions(emulator)) == 2
    assert key_versions(emulator)[-1].tags[ROTATION_TAG] == "r1"
    assert (power(azure, "cvm1"), power(azure, "cvm2")) == ("running", "deallocated")
    assert RECORD_TAG not in stored["tags"] and MEASURED_TAG in stored["tags"]
    deallocated = [w for w in writes(emulator) if w.endswith("/deallocate")]
    assert deallocated == [w for w in deallocated if "/cvm1/" in w] != []

    emulator.requests.clear()
    rotate_confidential_vm_key(rotation(azure_block))
    assert writes(emulator) == []


def test_crashes_at_each_step_are_finished_by_a_rerun(
    azure_block: str, emulator: Emulator, azure: AzureClients, two_vms: str
) -> None:
    before = set_state(emulator, two_vms)["properties"]["activeKey"]["keyUrl"]

    def crash_on(method: str, path: str) -> None:
        emulator.faults.clear()
        emulator.faults.add(Fault("status", method=method, path=path, status=400, count=None))
        with pytest.raises(ByokError):
            rotate_confidential_vm_key(rotation(azure_block, rotation_id=None))

    crash_on("POST", r"/keys/cvm-key/create$")  # after the deallocations
    assert (power(azure, "cvm1"), len(key_versions(emulator))) == ("deallocated", 1)
    assert set_state(emulator, two_vms)["tags"][RECORD_TAG]
    crash_on("PATCH", r"/diskEncryptionSets/des-cvm$")  # after the key version
    assert len(key_versions(emulator)) == 2
    assert set_state(emulator, two_vms)["properties"]["activeKey"]["keyUrl"] == before
    crash_on("POST", r"/virtualMachines/cvm1/start$")  # after the set update
    assert set_state(emulator, two_vms)["properties"]["activeKey"]["keyUrl"] != before
    assert power(azure, "cvm1") == "deallocated"

    emulator.faults.clear()
    done = rotate_confidential_vm_key(rotation(azure_block, rotation_id=None))
    assert len(key_versions(emulator)) == 2
    assert set_state(emulator, two_vms)["properties"]["activeKey"]["keyUrl"] == done.new_key
    assert (power(azure, "cvm1"), power(azure, "cvm2")) == ("running", "deallocated")
    assert RECORD_TAG not in set_state(emulator, two_vms)["tags"]
