"""Confidential VM steps: check a request, make the vault Premium, create or adopt the key
with the confidential-VM release policy, install the Confidential VM Orchestrator and grant
it get and release; for the offline rotation: plan it (the set's VMs, their power states, the
window), record the VMs to start again on the set, deallocate them, make the new key
version, start them again, clear the record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyReleasePolicy, KeyVaultKey
from azure.mgmt.compute.models import VirtualMachine
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id, resource_id
from azure.mgmt.keyvault.models import Sku, VaultPatchParameters, VaultPatchProperties
from prefect import get_run_logger, task
from prefect.runtime import flow_run

from blocks.azure import AzureCredentials
from byok.azure_errors import is_azure_error, is_propagation_delay, named_failure, or_none
from byok.confidential_vm_models import (
    CONFIDENTIAL_ENCRYPTION,
    CONFIDENTIAL_IMAGES,
    HSM_RELEASE_USER,
    ORCHESTRATOR_APP_ID,
    ORCHESTRATOR_KEY_PERMISSIONS,
    ORCHESTRATOR_NAME,
    RELEASE_USER,
    ConfidentialRotationRequest,
    ConfidentialVmEncryptionRequest,
    ConfidentialVmSpec,
    RotationPlan,
    RotationRecord,
    SetVm,
    check_confidential_set,
    finished_tags,
    recorded_tags,
    release_policy,
    set_ids_of,
    stop_start_seconds,
)
from byok.disk_encryption_set_models import check_existing_des, des_id, des_info
from byok.errors import VerificationFailed
from byok.key_sources import check_confidential_key, check_rotation_window
from byok.key_store import (
    HsmInfo,
    KeyInfo,
    KeyStore,
)
from byok.keyvault_ids import KeyId
from byok.outcomes import Change
from byok.retrying import retry_while, write_or_find
from byok.rotation import ROTATION_TAG
from byok.sdk_values import text
from byok.validation import InvalidRequest, check_name, region_key, same_region
from clients.azure import AzureClients
from clients.graph import install_app, service_principal_id
from clients.key_store_access import (
    assign_hsm_role,
    assign_role,
    grant,
    holds_hsm_role,
    holds_key_use,
    holds_role,
    holds_service_key_use,
    hsm_key_scope,
    read_hsm,
    read_vault,
)
from clients.vm_power import power_state
from tasks.disk_encryption_set import (
    ensure_disk_encryption_set,
    update_des_key,
    verify_des_key,
    wait_for_key_access,
)
from tasks.key_vault import grant_key_use, plan_key_vault, plan_new_key_version
from tasks.outcomes import planned, report
from tasks.retry import STEP_RETRIES
from tasks.subscription import plan_resource_group
from tasks.virtual_machine import ensure_network


def _key_facts(key: KeyVaultKey) -> tuple[str, bool, object]:
    """Type, exportable, release policy."""
    props = key.properties
    return text(key.key_type), bool(props.exportable), props.release_policy


def _key_info(key: KeyVaultKey) -> KeyInfo:
    kid = KeyId.parse(str(key.id))
    return KeyInfo(
        id=kid.versioned,
        versionless_id=kid.versionless,
        name=kid.name,
        version=str(kid.version),
        size=len(getattr(key.key, "n", None) or b"") * 8,
    )


@task(name="Validate request", **STEP_RETRIES)
def validate_confidential_request(
    credentials: AzureCredentials, request: ConfidentialVmEncryptionRequest
) -> str:
    """Read-only, before any write: names; an existing managed HSM has purge protection on;
    an existing key (in the vault or HSM) is an exportable RSA-HSM key with a release policy;
    an existing set is a confidential-VM set in the request's region. (The vault's rules, the
    HSM's activation, region and this tool's roles: `check_key_store`.) Returns the set's
    id."""
    check_name("resource_group", "resource_group", request.resource_group)
    if request.key_store == "key-vault":
        check_name("key_vault", "vault_name", str(request.vault_name))
    check_name("key", "key_name", request.key_name)
    check_name("disk_encryption_set", "des_name", request.des_name)
    clients = AzureClients.of(credentials, request.subscription_id)
    rg = request.resource_group
    url = _store_url(clients, request)
    if url is not None:
        keys = clients.keys(url)
        try:
            key = or_none(lambda: keys.get_key(request.key_name))
        except HttpResponseError as exc:
            if exc.status_code != 403:
                raise
            key = None  # not readable yet: checked once this tool's access is in place
        if key is not None:
            check_confidential_key(f"key_name '{request.key_name}'", *_key_facts(key))
    des = or_none(lambda: clients.compute().disk_encryption_sets.get(rg, request.des_name))
    if des is not None:
        same_region("location", request.location, str(des.location), f"set '{des.name}'")
        check_existing_des(des, CONFIDENTIAL_ENCRYPTION)
    if request.vm is not None:
        _check_image(clients, request.vm.image_version_id, request.location)
    return des_id(clients.subscription_id, rg, request.des_name)


def _store_url(clients: AzureClients, request: ConfidentialVmEncryptionRequest) -> str | None:
    """The data-plane address of the request's existing vault or managed HSM (None: a vault
    to create, or an HSM `check_key_store` refuses). Key release from an HSM needs its
    purge protection on ("Enable purge protection on the Azure Managed HSM. This step is
    required to enable key release.",
    https://learn.microsoft.com/azure/confidential-computing/quick-create-confidential-vm-arm)."""
    if request.key_store == "managed-hsm":
        hsm = read_hsm(clients, request.hsm_group, str(request.hsm_name))
        if hsm is None:
            return None
        if not hsm.properties.enable_purge_protection:
            raise InvalidRequest(
                "hsm_name",
                request.hsm_name,
                "key release needs purge protection on the managed HSM "
                f"(az keyvault update-hsm --hsm-name {request.hsm_name} "
                "--enable-purge-protection true)",
            )
        return str(hsm.properties.hsm_uri).rstrip("/")
    vault = read_vault(clients, request.resource_group, str(request.vault_name))
    return str(vault.properties.vault_uri).rstrip("/") if vault is not None else None


def _check_image(clients: AzureClients, version_id: str, location: str) -> None:
    """The image version exists, is replicated to `location`, and its definition allows
    confidential VMs (SecurityType `ConfidentialVmSupported` or `ConfidentialVM`:
    https://learn.microsoft.com/azure/confidential-computing/create-confidential-vm-from-compute-gallery)."""
    field = "vm.image_version_id"
    where = parse_resource_id(version_id) if is_valid_resource_id(version_id) else {}
    if str(where.get("child_type_2", "")).lower() != "versions":
        raise InvalidRequest(field, version_id, "not a gallery image version id")
    images = clients.compute().gallery_images
    group, gallery = str(where["resource_group"]), str(where["name"])
    version = or_none(
        lambda: clients.compute().gallery_image_versions.get(
            group, gallery, str(where["child_name_1"]), str(where["child_name_2"])
        )
    )
    if version is None:
        raise InvalidRequest(field, version_id, "no such image version")
    regions = [r.name for r in version.properties.publishing_profile.target_regions or []]
    if region_key(location) not in {region_key(str(r)) for r in regions}:
        raise InvalidRequest(field, version_id, f"replicated to {regions} only, not {location}")
    definition = images.get(group, gallery, str(where["child_name_1"]))
    features = {str(f.name).lower(): str(f.value) for f in definition.properties.features or []}
    if features.get("securitytype") not in CONFIDENTIAL_IMAGES:
        raise InvalidRequest(
            field,
            version_id,
            f"its image definition's SecurityType is {features.get('securitytype')}; a "
            f"confidential VM needs one of {', '.join(CONFIDENTIAL_IMAGES)}",
        )


@task(name="Create the confidential VM", **STEP_RETRIES)
def ensure_confidential_vm(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    location: str,
    spec: ConfidentialVmSpec,
    set_id: str,
    nic_id: str,
) -> str:
    """The confidential VM (get or create), checked: its OS disk is encrypted by the set.
    Returns its id."""
    vms = AzureClients.of(credentials, subscription_id).compute().virtual_machines
    name = spec.vm_name
    with named_failure(f"{resource_group}/{name}", "confidential VM creation"):
        vm = or_none(lambda: vms.get(resource_group, name))
        made = vm is None
        if vm is None:
            body = spec.to_sdk(location, set_id, nic_id)
            vm = vms.begin_create_or_update(resource_group, name, body).result()
    if set_id.lower() not in set_ids_of(vm):
        raise VerificationFailed(str(vm.id), f"its OS disk is not encrypted by {set_id}")
    report(str(vm.id), "create" if made else None, note=f"OS disk on {set_id}")
    return str(vm.id)


@task(name="Make the key vault Premium", **STEP_RETRIES)
def ensure_premium_vault(
    credentials: AzureCredentials, subscription_id: str | None, vault: KeyStore
) -> None:
    """Exportable keys need a Premium vault (Key Vault's AKV.SKR.1001); a Standard vault is
    moved to Premium, once (`Vaults - Update` takes `properties.sku`, as
    `az keyvault update --set properties.sku.name=premium` sends it). A managed HSM holds
    HSM keys only: nothing to do."""
    if isinstance(vault, HsmInfo):
        return
    vaults = AzureClients.of(credentials, subscription_id).keyvault_management().vaults
    group = str(parse_resource_id(vault.id)["resource_group"])
    with named_failure(vault.id, "moving the vault to Premium"):
        sku = text(vaults.get(group, vault.name).properties.sku.name).lower()
        if sku == "premium":
            report(vault.id, None, note="sku premium")
            return
        patch = VaultPatchProperties(sku=Sku(family="A", name="premium"))
        vaults.update(group, vault.name, VaultPatchParameters(properties=patch))
    report(vault.id, "update", changes=[Change(field="sku", old=sku, new="premium")])


@task(name="Create the confidential VM key", **STEP_RETRIES)
def ensure_confidential_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    vault: KeyStore,
    name: str,
    size: int,
    attestation_authority: str,
    timeout_seconds: float,
) -> KeyInfo:
    """Reuse the key `name` (an exportable RSA-HSM key with a release policy, else refused
    naming it) or create it with the confidential-VM release policy
    (`az keyvault key create --kty RSA-HSM --exportable true --default-cvm-policy`)."""
    keys = AzureClients.of(credentials, subscription_id).keys(vault.url)
    policy = KeyReleasePolicy(json.dumps(release_policy(attestation_authority)).encode())

    def get_or_create() -> KeyInfo:
        key = or_none(lambda: keys.get_key(name))
        made = key is None
        if key is None:
            key = write_or_find(
                lambda: keys.create_rsa_key(
                    name, size=size, hardware_protected=True, exportable=True, release_policy=policy
                ),
                lambda: or_none(lambda: keys.get_key(name)),
                is_azure_error,
            )
        check_confidential_key(f"key_name '{name}'", *_key_facts(key))
        report(str(key.id), "create" if made else None, note="exportable RSA-HSM")
        return _key_info(key)

    with named_failure(f"{vault.url}/keys/{name}", "confidential key creation", waited=True):
        return retry_while(
            get_or_create, is_propagation_delay, timeout_seconds=timeout_seconds, first_delay=1
        )


@task(name="Install the Confidential VM Orchestrator", **STEP_RETRIES)
def ensure_orchestrator(credentials: AzureCredentials) -> str:
    """The Confidential VM Orchestrator's service principal in the block's tenant
    (`az ad sp create --id bf7b6499-ff71-4aa2-97a4-f372087be7f0`), made once. Returns its
    object id."""
    with named_failure(f"tenant '{credentials.tenant_id}'", f"installing {ORCHESTRATOR_NAME}"):
        principal, made = install_app(AzureClients.of(credentials), ORCHESTRATOR_APP_ID)
    report(principal, "create" if made else None, note=ORCHESTRATOR_NAME)
    return principal


@task(name="Grant the orchestrator key release", **STEP_RETRIES)
def grant_key_release(
    credentials: AzureCredentials,
    subscription_id: str | None,
    store: KeyStore,
    principal_id: str,
    key_name: str,
    timeout_seconds: float,
) -> None:
    """The orchestrator may release the key: get and release by access policy (as
    `az keyvault set-policy --key-permissions get release` in the quickstart), Key Vault
    Crypto Service Release User on the key of an RBAC vault, or on a managed HSM its local
    role Managed HSM Crypto Service Release User at `/keys/<key_name>`."""
    clients = AzureClients.of(credentials, subscription_id)
    if isinstance(store, HsmInfo):
        scope = hsm_key_scope(store, key_name)
        wrote = assign_hsm_role(clients, store, scope, principal_id, HSM_RELEASE_USER)
    elif store.rbac:
        key_id = _key_scope(store, key_name)
        wrote = assign_role(clients, key_id, principal_id, RELEASE_USER, timeout_seconds)
    else:
        wrote = grant(
            clients,
            store,
            principal_id,
            ORCHESTRATOR_KEY_PERMISSIONS,
            RELEASE_USER,
            timeout_seconds,
        )
    report(store.id, "grant" if wrote else None, note=_release_note(key_name))


def _key_scope(vault: KeyStore, key_name: str) -> str:
    """A vault key's resource id (Microsoft.KeyVault/vaults/keys), an RBAC scope."""
    return f"{vault.id}/keys/{key_name}"


def _release_note(key_name: str) -> str:
    return f"release of key {key_name} by the {ORCHESTRATOR_NAME}"


def _holds_release(clients: AzureClients, store: KeyStore, principal_id: str, key: str) -> bool:
    """Whether the orchestrator may release the key already, as `grant_key_release` lets it
    (read only)."""
    if isinstance(store, HsmInfo):
        scope = hsm_key_scope(store, key)
        return holds_hsm_role(clients, store, scope, principal_id, HSM_RELEASE_USER)
    if store.rbac:
        return holds_role(clients, _key_scope(store, key), principal_id, RELEASE_USER)
    return holds_key_use(clients, store, principal_id, ORCHESTRATOR_KEY_PERMISSIONS, RELEASE_USER)


def _set_vm(clients: AzureClients, vm: VirtualMachine) -> SetVm:
    group = str(parse_resource_id(str(vm.id))["resource_group"])
    name = str(vm.name)
    return SetVm(
        id=str(vm.id),
        resource_group=group,
        name=name,
        power_state=power_state(clients, group, name)[0].split("/", 1)[1],
    )


@task(name="Plan the offline rotation", **STEP_RETRIES)
def plan_confidential_rotation(
    credentials: AzureCredentials, request: ConfidentialRotationRequest
) -> RotationPlan:
    """Read-only: the set (a confidential-VM set), every VM with a disk on it and its power
    state, the rotation left unfinished on the set (its record) or a new one, what to stop and
    start, and the window checked against the VMs' stop-and-start time."""
    clients = AzureClients.of(credentials, request.subscription_id)
    rg, name = request.resource_group, request.des_name
    found = or_none(lambda: clients.compute().disk_encryption_sets.get(rg, name))
    if found is None:
        raise InvalidRequest("des_name", name, f"no disk encryption set of that name in {rg}")
    des = des_info(found)
    check_confidential_set(des)
    vms = sorted(
        (
            _set_vm(clients, vm)
            for vm in clients.compute().virtual_machines.list_all()
            if des.id.lower() in set_ids_of(vm)
        ),
        key=lambda vm: vm.ref,
    )
    record = RotationRecord.from_tags(found.tags)
    rotation_id = record.rotation_id if record else request.rotation_id or str(flow_run.id)
    if record and request.rotation_id and request.rotation_id != record.rotation_id:
        get_run_logger().warning(
            "Set %s: rotation %s is unfinished; finishing it first", name, record.rotation_id
        )
    key = KeyId.parse(des.key_url)
    active = clients.keys(key.vault_url).get_key(key.name, key.version)
    rotated = (active.properties.tags or {}).get(ROTATION_TAG) == rotation_id
    running = [vm.ref for vm in vms if vm.was_running]
    to_start = sorted({*record.running, *running}) if record else running
    plan = RotationPlan(
        des=des,
        vms=vms,
        record=RotationRecord(rotation_id=rotation_id, running=to_start),
        rotated=rotated,
        pending=record is not None or not rotated,
        to_stop=[] if rotated else [vm.ref for vm in vms if vm.power_state != "deallocated"],
        to_start=to_start,
    )
    if plan.to_stop:
        needed = stop_start_seconds(found.tags, request.stop_start_estimate_minutes)
        check_rotation_window(
            "maintenance_window_minutes", request.maintenance_window_minutes, needed / 60, "min"
        )
        recorded_tags(found.tags, plan.record)  # the record fits on the set
    on_key = "; the set is on this rotation's key already" if rotated else ""
    vms_said = ", ".join(f"{vm.ref} {vm.power_state}" for vm in vms) or "none"
    report(des.id, "read", note=f"VMs on the set: {vms_said}{on_key}")
    return plan


def _retag(
    clients: AzureClients,
    resource_group: str,
    name: str,
    wanted: Callable[[dict[str, str]], dict[str, str]],
) -> bool:
    """Give the set the tags `wanted` makes of its current ones: a PUT of the set as read,
    which replaces its tags as a whole (a PATCH's tags may be merged into the old ones, the
    record's would stay); a re-sent PUT sets the same. Returns whether they changed."""
    sets = clients.compute().disk_encryption_sets
    des = sets.get(resource_group, name)
    tags = wanted(dict(des.tags or {}))
    if tags == (des.tags or {}):
        return False
    des.tags = tags
    sets.begin_create_or_update(resource_group, name, des).result()
    return True


@task(name="Record the VMs to start again", **STEP_RETRIES)
def record_rotation(
    credentials: AzureCredentials, subscription_id: str | None, plan: RotationPlan
) -> None:
    """Keep the rotation's id and the VMs that were running in the set's tags before any VM
    stops, so that a re-run after a crash knows what to start again."""
    clients = AzureClients.of(credentials, subscription_id)
    group, name = plan.des_group, plan.des.name
    with named_failure(plan.des.id, "recording the rotation"):
        changed = _retag(clients, group, name, lambda tags: recorded_tags(tags, plan.record))
    report(plan.des.id, "update" if changed else None, note=_record_note(plan))


def _record_note(plan: RotationPlan) -> str:
    running = ", ".join(plan.record.running) or "none"
    return f"rotation {plan.record.rotation_id} recorded, to start again: {running}"


def _where(ref: str) -> tuple[str, str]:
    group, name = ref.split("/", 1)
    return group, name


def _on_all(refs: list[str], begin: Callable[[str, str], Any], doing: str) -> None:
    """Start a VM operation on every VM at once, then wait for each; a refusal names the VM."""
    pollers = []
    for ref in refs:
        with named_failure(ref, doing):
            pollers.append((ref, begin(*_where(ref))))
    for ref, poller in pollers:
        with named_failure(ref, doing):
            poller.result()


@task(name="Deallocate the VMs", **STEP_RETRIES)
def deallocate_vms(
    credentials: AzureCredentials, subscription_id: str | None, refs: list[str]
) -> float:
    """Deallocate the VMs (all at once; deallocating one twice is harmless); returns the
    seconds it took."""
    vms = AzureClients.of(credentials, subscription_id).compute().virtual_machines
    started = time.monotonic()
    _on_all(refs, vms.begin_deallocate, "deallocating the VM")
    for ref in refs:
        report(ref, "stop", note="deallocated")
    return time.monotonic() - started


@task(name="Start the VMs again", **STEP_RETRIES)
def start_vms(credentials: AzureCredentials, subscription_id: str | None, refs: list[str]) -> float:
    """Start the VMs that are not running (all at once), then check each runs; returns the
    seconds it took."""
    clients = AzureClients.of(credentials, subscription_id)
    vms = clients.compute().virtual_machines
    started = time.monotonic()
    stopped = [ref for ref in refs if power_state(clients, *_where(ref))[0] != "PowerState/running"]
    _on_all(stopped, vms.begin_start, "starting the VM")
    not_running = [
        ref for ref in refs if power_state(clients, *_where(ref))[0] != "PowerState/running"
    ]
    if not_running:
        raise VerificationFailed(", ".join(not_running), "started, but not running")
    for ref in refs:
        report(ref, "start" if ref in stopped else None, note="running")
    return time.monotonic() - started


@task(name="Clear the rotation record", **STEP_RETRIES)
def finish_rotation(
    credentials: AzureCredentials,
    subscription_id: str | None,
    plan: RotationPlan,
    measured_seconds: float | None,
) -> None:
    """Remove the record from the set's tags and keep the measured stop-and-start time there
    (the next rotation's window is checked against it)."""
    clients = AzureClients.of(credentials, subscription_id)
    group, name = plan.des_group, plan.des.name
    with named_failure(plan.des.id, "clearing the rotation record"):
        changed = _retag(clients, group, name, lambda tags: finished_tags(tags, measured_seconds))
    report(plan.des.id, "update" if changed else None, note=RECORD_CLEARED)


RECORD_CLEARED = "rotation record cleared"


grant_set_key_use = grant_key_use.with_options(name="Grant the set's identity access to the key")


@task(name="Plan the confidential-VM encryption", **STEP_RETRIES)
def plan_confidential_encryption(
    credentials: AzureCredentials, request: ConfidentialVmEncryptionRequest, hsm: HsmInfo | None
) -> None:
    """What each step of prepare-confidential-vm-encryption would do, from reads only (`hsm`:
    the adopted managed HSM; else the vault is read here)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    sub, rg, key_name = clients.subscription_id, request.resource_group, request.key_name
    plan_resource_group.fn(credentials, sub, rg)
    store: KeyStore | None = hsm
    if hsm is None:
        name = str(request.vault_name)
        store = plan_key_vault.fn(credentials, sub, rg, name)
        vault = read_vault(clients, rg, name) if store else None
        sku = text(vault.properties.sku.name).lower() if vault else "standard"
        moved = [Change(field="sku", old=sku, new="premium")] if sku != "premium" else []
        verb = "update" if moved else None
        where = store.id if store else f"the new vault {name}"
        report(where, verb, step=ensure_premium_vault.name, changes=moved, planned=True)
    try:
        key = or_none(lambda: clients.keys(store.url).get_key(key_name)) if store else None
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        key = None  # not readable before this tool's grant
    where = f"{store.url if store else 'the new vault'}/keys/{key_name}"
    planned(ensure_confidential_key, str(key.id) if key else where, None if key else "create")
    orchestrator = service_principal_id(clients, ORCHESTRATOR_APP_ID)
    planned(
        ensure_orchestrator, orchestrator or ORCHESTRATOR_APP_ID, None if orchestrator else "create"
    )
    released = store and orchestrator and _holds_release(clients, store, orchestrator, key_name)
    planned(
        grant_key_release,
        store.id if store else where,
        None if released else "grant",
        _release_note(key_name),
    )
    target = des_id(sub, rg, request.des_name)
    des = or_none(lambda: clients.compute().disk_encryption_sets.get(rg, request.des_name))
    planned(ensure_disk_encryption_set, target, None if des else "create")
    principal = des_info(des).principal_id if des else None
    held = holds_service_key_use(clients, store, principal, key_name)
    who = principal or "the set's new identity"
    planned(
        grant_set_key_use,
        store.id if store else where,
        None if held else "grant",
        f"key use by {who}",
    )
    in_use = des_info(des).key_url if des else None
    moved = (
        [Change(field="activeKey", old=in_use, new=str(key.id))]
        if des and key and in_use != str(key.id)
        else []
    )
    verb = "update" if moved or (des and not key) else "verify"
    report(
        target,
        verb,
        step=wait_for_key_access.name,
        changes=moved,
        note="key access effective",
        planned=True,
    )
    if request.vm is not None:
        _planned_vm(clients, rg, request.vm, target)


def _planned_vm(clients: AzureClients, rg: str, spec: ConfidentialVmSpec, set_id: str) -> None:
    """The rows of `ensure_network` (a virtual network unless the VM names its subnet, a NIC)
    and of `ensure_confidential_vm`."""
    network = clients.network()
    wanted: list[tuple[Any, str, str]] = [
        (network.network_interfaces, "networkInterfaces", f"{spec.vm_name}-nic")
    ]
    if spec.subnet_id is None:
        wanted.insert(0, (network.virtual_networks, "virtualNetworks", f"{spec.vm_name}-vnet"))
    for group, kind, name in wanted:
        found = or_none(partial(group.get, rg, name))
        where = resource_id(
            subscription=clients.subscription_id,
            resource_group=rg,
            namespace="Microsoft.Network",
            type=kind,
            name=name,
        )
        planned(ensure_network, str(found.id) if found else where, None if found else "create")
    vm = or_none(lambda: clients.compute().virtual_machines.get(rg, spec.vm_name))
    vm_id = resource_id(
        subscription=clients.subscription_id,
        resource_group=rg,
        namespace="Microsoft.Compute",
        type="virtualMachines",
        name=spec.vm_name,
    )
    note = f"OS disk on {set_id}"
    planned(ensure_confidential_vm, str(vm.id) if vm else vm_id, None if vm else "create", note)


@task(name="Plan the rotation's steps", **STEP_RETRIES)
def plan_rotation_steps(
    credentials: AzureCredentials, subscription_id: str | None, plan: RotationPlan
) -> None:
    """What each step of rotate-confidential-vm-key would do after `plan` (its reads), with
    one read more: a key version an earlier run made for this rotation."""
    des = plan.des
    if not plan.rotated:
        planned(record_rotation, des.id, "update", _record_note(plan))
    for ref in plan.to_stop:
        planned(deallocate_vms, ref, "stop", "deallocated")
    new = des.key_url
    if not plan.rotated:
        rotation = plan.record.rotation_id
        new = plan_new_key_version.fn(credentials, subscription_id, des.key_url, rotation)
    if new != des.key_url:
        moved = [Change(field="activeKey", old=des.key_url, new=new)]
        report(des.id, "update", step=update_des_key.name, changes=moved, planned=True)
    planned(verify_des_key, des.id, "verify")
    state = {vm.ref: vm.power_state for vm in plan.vms}
    for ref in plan.to_start:
        stopped = ref in plan.to_stop or state.get(ref) != "running"
        planned(start_vms, ref, "start" if stopped else None, "running")
    planned(finish_rotation, des.id, "update" if plan.pending else None, RECORD_CLEARED)
