"""The fleet rotation against a seeded fleet in two subscriptions: one new version per key,
every set and registry moved and verified, failures named without stopping the others, a
re-run that resumes (no second version), a dry run that writes nothing."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import psutil
import pytest
from azure.mgmt.keyvault.models import AccessPolicyEntry, Permissions, VaultAccessPolicyProperties
from prefect import flow

from blocks.azure import AzureCredentials
from byok.errors import InvalidRequest
from byok.keyvault_ids import KeyId
from byok.rotation import FleetRotationRequest
from clients.azure import AzureClients
from console.fleet_seed import GROUP, FleetSeed, seed_fleet
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from flows.fleet_rotation import rotate_customer_keys
from tasks import task_runners
from tasks.task_runners import check_task_runner, dask_runner_for


@pytest.fixture
def fleet(
    emulator: Emulator,
    azure_credentials: AzureCredentials,
    new_subscription: Callable[[str], str],
    flow_principal: Principal,
) -> FleetSeed:
    """Two subscriptions of sets and registries; the flows' principal may manage the keys
    (an access policy on each vault, as the README asks)."""
    subs = [emulator.identity.subscription_id, new_subscription("fleet-b")]
    seeded = seed_fleet(azure_credentials, subscriptions=subs, resources=20)
    for sub in subs:
        vaults = AzureClients(azure_credentials, sub).keyvault_management().vaults
        for vault in vaults.list_by_subscription():
            policy = AccessPolicyEntry(
                tenant_id=emulator.identity.tenant_id,
                object_id=flow_principal.object_id,
                permissions=Permissions(keys_property=["get", "list", "create"]),
            )
            vaults.update_access_policy(
                GROUP,
                str(vault.name),
                "add",
                {"properties": VaultAccessPolicyProperties(access_policies=[policy])},
            )
    return seeded


def writes(emulator: Emulator) -> list[str]:
    """Writes served, sign-ins and Resource Graph queries (POSTs that read) aside."""
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests.find()
        if r.method in ("PUT", "PATCH", "POST", "DELETE")
        and not r.path.endswith(("/token", "/Microsoft.ResourceGraph/resources"))
    ]


def request(azure_block: str, **fields: object) -> FleetRotationRequest:
    return FleetRotationRequest.model_validate(
        {
            "azure_credentials_block": azure_block,
            "poll_seconds": 0.05,
            "pickup_timeout_minutes": 0.5,
            **fields,
        }
    )


def versions(credentials: AzureCredentials, key_ids: list[str]) -> dict[str, int]:
    clients = AzureClients(credentials)
    found = {}
    for key_id in key_ids:
        kid = KeyId.parse(key_id)
        found[kid.name + "@" + kid.vault_url] = len(
            list(clients.keys(kid.vault_url).list_properties_of_key_versions(kid.name))
        )
    return found


def set_hooks(emulator: Emulator) -> object:
    """The emulator's rules of disk encryption sets (their timings)."""
    return emulator.arm.types["microsoft.compute/diskencryptionsets"].hooks


def active_keys(credentials: AzureCredentials, seeded: FleetSeed) -> dict[str, str]:
    """Each set's and registry's key id as ARM reports it."""
    found = {}
    for des_id in seeded.des_ids:
        sub, name = des_id.split("/")[2], des_id.rsplit("/", 1)[-1]
        des = AzureClients(credentials, sub).compute().disk_encryption_sets.get(GROUP, name)
        found[des_id] = str(des.active_key.key_url)
    for registry_id in seeded.registry_ids:
        sub, name = registry_id.split("/")[2], registry_id.rsplit("/", 1)[-1]
        reg = AzureClients(credentials, sub).container_registry().registries.get(GROUP, name)
        props = reg.encryption.key_vault_properties if reg.encryption else None
        found[registry_id] = str(props.versioned_key_identifier if props else None)
    return found


def test_plan_only_plans_every_key_and_writes_nothing(
    azure_block: str, emulator: Emulator, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    before = versions(azure_credentials, fleet.key_ids)
    emulator.requests.clear()
    result = rotate_customer_keys(request(azure_block, plan_only=True))
    assert writes(emulator) == []
    assert versions(azure_credentials, fleet.key_ids) == before
    keys = [r for r in result.rows if r.kind == "key"]
    assert len(keys) == len(fleet.key_ids) and {r.status for r in result.rows} == {"planned"}
    moved = {r.dependent_id for r in result.rows if r.dependent_id}
    assert moved == set(fleet.des_ids) | {
        r
        for r in fleet.registry_ids
        if "x2" not in r  # the Basic registry has no customer key
    }


def test_rotation_moves_dependents_names_failures_and_resumes(
    azure_block: str, emulator: Emulator, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    before = versions(azure_credentials, fleet.key_ids)
    state = rotate_customer_keys(request(azure_block), return_state=True)
    # the set whose grant was revoked cannot take the new version: named, the others moved
    assert state.is_failed()
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of ")
    assert all(d in state.message for d in revoked)
    after = versions(azure_credentials, fleet.key_ids)
    assert after == {k: n + 1 for k, n in before.items()}
    active = active_keys(azure_credentials, fleet)
    latest = {
        KeyId.parse(k).versionless: AzureClients(azure_credentials)
        .keys(KeyId.parse(k).vault_url)
        .get_key(KeyId.parse(k).name)
        .id
        for k in fleet.key_ids
    }
    for dependent, key_url in active.items():
        if dependent in revoked or "x2" in dependent:
            continue
        assert key_url == latest[KeyId.parse(key_url).versionless], dependent
    # the same selection again (same day: same rotation): no second version, same failures
    state = rotate_customer_keys(request(azure_block), return_state=True)
    assert state.is_failed() and all(d in state.message for d in revoked)
    assert versions(azure_credentials, fleet.key_ids) == after


def test_unreachable_dask_scheduler_is_refused_before_any_write(
    azure_block: str, emulator: Emulator
) -> None:
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match=r"dask_address = 'tcp://127\.0\.0\.1:9': no Dask"):
        rotate_customer_keys(
            request(azure_block, task_runner="dask", dask_address="tcp://127.0.0.1:9")
        )
    assert writes(emulator) == []


@pytest.mark.parametrize("profiler", [True, False])
def test_dask_workers_that_can_freeze_are_refused_before_any_write(
    azure_block: str, emulator: Emulator, profiler: bool
) -> None:
    """Dask's profiler on Python 3.11 before 3.11.9 can freeze a worker (CPython gh-106883):
    such an existing cluster is refused, one with the profiler off is taken."""
    import dask.config
    from distributed import LocalCluster

    emulator.requests.clear()
    can_freeze = profiler and (3, 11) <= sys.version_info[:3] < (3, 11, 9)
    with (
        dask.config.set({"distributed.worker.profile.enabled": profiler}),
        LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster,
    ):
        asked = request(azure_block, task_runner="dask", dask_address=cluster.scheduler_address)
        if can_freeze:
            with pytest.raises(
                InvalidRequest,
                match=r"dask_address = .*: 2 worker\(s\) run Python 3\.11\.\d+ with Dask's "
                r"profiler on, .*distributed\.worker\.profile\.enabled false",
            ):
                rotate_customer_keys(asked)
            assert writes(emulator) == []
        else:
            check_task_runner.fn(asked)


def test_a_local_dask_clusters_workers_do_not_profile() -> None:
    """The local cluster's workers run without Dask's profiler (see the test above)."""
    runner = dask_runner_for(request("unused", task_runner="dask", dask_workers=1))
    with runner:
        sampling = runner.client.run(
            lambda dask_worker: "profile" in dask_worker.periodic_callbacks
        )
    assert list(sampling.values()) == [False]


def test_lost_answers_and_a_failing_set_leave_no_duplicate_and_a_rerun_finishes(
    azure_block: str, emulator: Emulator, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    before = versions(azure_credentials, fleet.key_ids)
    start = active_keys(azure_credentials, fleet)
    emulator.faults.add(Fault("reset-after", method="POST", path=r"/keys/k0/create$"))
    emulator.faults.add(Fault("reset-after", method="PATCH", path=r"/diskEncryptionSets/des-2$"))
    emulator.faults.add(
        Fault("status", status=500, method="PATCH", path=r"/diskEncryptionSets/des-0$", count=None)
    )
    state = rotate_customer_keys(request(azure_block, rotation_id="r1"), return_state=True)
    assert state.is_failed()
    broken = [d for d in fleet.des_ids if d.endswith(("des-0", "des-3"))]
    assert all(d in state.message for d in broken), state.message
    assert "des-2" not in state.message  # its PATCH applied, the answer lost: looked up
    after = versions(azure_credentials, fleet.key_ids)
    assert after == {k: n + 1 for k, n in before.items()}  # the lost create made one version
    emulator.faults.clear()
    state = rotate_customer_keys(request(azure_block, rotation_id="r1"), return_state=True)
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of "), state.message
    assert versions(azure_credentials, fleet.key_ids) == after
    active = active_keys(azure_credentials, fleet)
    moved = [d for d in fleet.des_ids if d.endswith("des-0")]
    assert moved and all(active[d] != start[d] for d in moved)


@pytest.mark.slow
def test_two_runs_at_once_make_one_version_per_key(
    azure_block: str, emulator: Emulator, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    before = versions(azure_credentials, fleet.key_ids)
    outcomes: list[object] = []

    def run() -> None:
        outcomes.append(
            rotate_customer_keys(request(azure_block, wait_for_other_run=True), return_state=True)
        )

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(outcomes) == 2
    assert versions(azure_credentials, fleet.key_ids) == {k: n + 1 for k, n in before.items()}


@pytest.mark.slow
def test_rotation_on_a_local_dask_cluster(
    azure_block: str, emulator: Emulator, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    before = versions(azure_credentials, fleet.key_ids)
    state = rotate_customer_keys(
        request(azure_block, task_runner="dask", dask_workers=2), return_state=True
    )
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of "), state.message
    assert versions(azure_credentials, fleet.key_ids) == {k: n + 1 for k, n in before.items()}


def test_a_local_dask_cluster_starts_with_the_run_and_closes_when_it_fails_early(
    prefect_harness: None, emulator: Emulator
) -> None:
    """The local cluster starts as the run begins (beside the planning): a run that fails
    before its moves still had its worker, and leaves none."""
    seen: set[int] = set()
    running = threading.Event()

    def watch() -> None:
        while not running.wait(0.05):
            seen.update(_dask_workers())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        asked = request("no-such-block", task_runner="dask", dask_workers=1)
        state = rotate_customer_keys(asked, return_state=True)
    finally:
        running.set()
        watcher.join()
    assert state.is_failed() and "no-such-block" in str(state.message), state.message
    assert len(seen) == 1  # its worker started
    assert _dask_workers() == []
    assert writes(emulator) == []


def test_a_close_that_fails_while_the_run_fails_leaves_the_runs_error(
    prefect_harness: None, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's own error is what its state reports, not a failed close of its cluster."""

    def closed_then_failed(starting: Future[object]) -> None:
        real_close(starting)  # the workers do go
        raise RuntimeError("the cluster's close failed")

    real_close = task_runners._closed
    monkeypatch.setattr(task_runners, "_closed", closed_then_failed)
    asked = request("no-such-block", task_runner="dask", dask_workers=1)
    state = rotate_customer_keys(asked, return_state=True)

    assert state.is_failed() and "no-such-block" in str(state.message), state.message
    assert "close failed" not in str(state.message)
    assert _dask_workers() == []
    assert writes(emulator) == []


def _dask_workers() -> list[int]:
    """This process's local Dask workers: the children of its fork server."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.ppid() != os.getpid() and "forkserver" in " ".join(process.cmdline()):
                found.append(process.pid)
    return found


def test_rotation_on_an_existing_dask_cluster(
    azure_block: str, emulator: Emulator, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    """`dask_address`: the shares go to a running scheduler's workers (here in this process,
    their profiler off)."""
    import dask.config
    from distributed import LocalCluster

    before = versions(azure_credentials, fleet.key_ids)
    with (
        dask.config.set({"distributed.worker.profile.enabled": False}),
        LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster,
    ):
        asked = request(azure_block, task_runner="dask", dask_address=cluster.scheduler_address)
        state = rotate_customer_keys(asked, return_state=True)
        ran = dict(cluster.scheduler.task_prefixes["move_dependents"].state_counts)
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of "), state.message
    assert versions(azure_credentials, fleet.key_ids) == {k: n + 1 for k, n in before.items()}
    assert ran["memory"] == 2, ran  # one share per worker went through the scheduler


def test_a_registry_whose_identity_discovery_missed_keeps_its_own(
    prefect_harness: None, emulator: Emulator, azure: AzureClients
) -> None:
    """A registry row without its encryption identity is moved with the identity it uses
    (read from the registry), never with the text 'None'."""
    from azure.mgmt.containerregistry.models import (
        EncryptionProperty,
        IdentityProperties,
        KeyVaultProperties,
        Registry,
        RegistryProperties,
        Sku,
        UserIdentityProperties,
    )
    from azure.mgmt.keyvault.models import VaultAccessPolicyParameters

    from byok.rotation import Dependent, DependentKind, RotationRow, Status
    from clients.fleet_pickups import Pickups
    from tasks.fleet_rotation import move_dependent
    from tests.helpers import vault_with_key

    _, key_id = vault_with_key(azure, emulator, group="rg-fid", vault="kv-fid", key="k")
    uai = azure.msi().user_assigned_identities.create_or_update(
        "rg-fid", "id-fid", {"location": "westeurope"}
    )
    policy = AccessPolicyEntry(
        tenant_id=emulator.identity.tenant_id,
        object_id=str(uai.principal_id),
        permissions=Permissions(keys_property=["get", "wrapKey", "unwrapKey"]),
    )
    access = VaultAccessPolicyParameters(
        properties=VaultAccessPolicyProperties(access_policies=[policy])
    )
    azure.keyvault_management().vaults.update_access_policy("rg-fid", "kv-fid", "add", access)
    registry = Registry(
        location="westeurope",
        sku=Sku(name="Premium"),
        identity=IdentityProperties(
            type="UserAssigned", user_assigned_identities={str(uai.id): UserIdentityProperties()}
        ),
        properties=RegistryProperties(
            encryption=EncryptionProperty(
                status="enabled",
                key_vault_properties=KeyVaultProperties(
                    key_identifier=key_id, identity=uai.client_id
                ),
            )
        ),
    )
    registries = azure.container_registry().registries
    made = registries.begin_create("rg-fid", "acrfid1", registry).result()
    new = str(azure.keys(KeyId.parse(key_id).vault_url).create_rsa_key("k", size=2048).id)
    dependent = Dependent(
        resource_id=str(made.id),
        kind=DependentKind.REGISTRY,
        key_url=key_id,
        follows_latest=False,
        identity=None,
    )
    key = RotationRow(
        key_id=KeyId.parse(key_id).versionless, action="new version", status=Status.ROTATED,
        version=new,
    )  # fmt: skip

    @flow(name="move-one-registry")
    def move_one() -> RotationRow | None:
        asked = request("unused")
        pickups = Pickups(azure.block, asked, [])
        return move_dependent(azure.block, dependent, key, "r1", asked, pickups)

    row = move_one()  # the registry reports the version at once: nothing left to wait for
    assert row is not None and (row.status, row.reason) == (Status.VERIFIED, "")
    kvp = registries.get("rg-fid", "acrfid1").encryption.key_vault_properties
    assert (kvp.identity, kvp.key_identifier) == (uai.client_id, new)


def test_a_dependent_whose_reads_fail_past_the_sdk_retries_is_moved_again(
    azure_block: str, emulator: Emulator, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    """A transient failure the SDK's own retries (10) do not outlast fails the set's move,
    and the move runs again and moves it."""
    target = next(d for d in fleet.des_ids if d.endswith("des-0"))
    start = active_keys(azure_credentials, fleet)[target]
    fault = emulator.faults.add(
        Fault("status", status=503, retry_after=0.01, method="GET", path=f"{target}$", count=11)
    )
    state = rotate_customer_keys(request(azure_block, rotation_id="r-retry"), return_state=True)
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of "), state.message
    assert target not in state.message
    assert fault.fired == 11
    assert active_keys(azure_credentials, fleet)[target] != start


def test_a_moved_dependent_is_verified_from_what_its_update_read_back(
    azure_block: str, emulator: Emulator, fleet: FleetSeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check after an update starts from the resource the update's operation read back:
    a set pinned to a version is read once (the operation's final read), a registry twice
    (before its PATCH, and the operation's), not once or twice more to verify them (ARM's
    read bucket binds at scale). Disks re-wrapped at once, so that the first read is final."""
    monkeypatch.setattr(set_hooks(emulator), "rewrap_seconds", 0)
    emulator.requests.clear()
    rotate_customer_keys(request(azure_block), return_state=True)
    for kind, expected in (("diskEncryptionSets", 1), ("registries", 2)):
        patched = {
            r.path
            for r in emulator.requests.find("PATCH", f"/{kind}/[^/]+$")
            if r.status < 300  # a set whose grant was revoked is refused
        }
        assert patched, kind  # the seed pins some of each to a version
        reads = {path: len(emulator.requests.find("GET", f"^{path}$")) for path in patched}
        assert reads == {path: expected for path in patched}


def test_sets_pinned_to_a_version_re_wrap_together_not_a_thread_each(
    azure_block: str,
    emulator: Emulator,
    azure_credentials: AzureCredentials,
    fleet: FleetSeed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One move at a time, disks re-wrapped 2 s after a set's update: each pinned set is
    updated right after the one before, not after its re-wrap (the re-wraps are waited for
    together); every set ends on the new version with no previous key left."""
    monkeypatch.setattr(set_hooks(emulator), "rewrap_seconds", 2)
    before = active_keys(azure_credentials, fleet)
    emulator.requests.clear()
    state = rotate_customer_keys(request(azure_block, max_concurrency=1), return_state=True)
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of "), state.message
    patched = [
        r for r in emulator.requests.find("PATCH", "/diskEncryptionSets/[^/]+$") if r.status < 300
    ]
    assert len(patched) >= 3, patched
    assert patched[-1].time - patched[0].time < 2
    for r in patched:
        sub, name = r.path.split("/")[2], r.path.rsplit("/", 1)[-1]
        des = AzureClients(azure_credentials, sub).compute().disk_encryption_sets.get(GROUP, name)
        assert des.previous_keys == []
        assert des.active_key.key_url != before[next(d for d in before if d.endswith(r.path))]


def test_dependents_that_follow_the_latest_version_are_checked_by_listing_them(
    azure_block: str, emulator: Emulator, fleet: FleetSeed
) -> None:
    """A set or registry that picks the new version up by itself is never read on its own:
    each round lists each subscription's sets and registries once."""
    emulator.requests.clear()
    # the emulator's pickups take 0.5 s from the version's creation: 3 rounds at most
    state = rotate_customer_keys(request(azure_block, poll_seconds=0.25), return_state=True)
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of "), state.message
    followers = [d for d in fleet.des_ids if d.endswith("des-1")] + [
        r for r in fleet.registry_ids if r.endswith("x1")
    ]
    assert followers
    for resource in followers:
        assert not emulator.requests.find(None, f"^{resource}$"), resource
    for kind in ("diskEncryptionSets", "registries"):
        listings = emulator.requests.find("GET", f"^/subscriptions/[^/]+/providers/[^/]+/{kind}$")
        assert 2 <= len(listings) <= 2 * 4, kind  # two subscriptions, 1-3 rounds (1 spare)


def test_a_dependent_that_does_not_pick_the_version_up_in_time_is_a_named_failure(
    azure_block: str, emulator: Emulator, fleet: FleetSeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sets that follow the latest version and take longer than `pickup_timeout_minutes`
    fail by name with the state they were left in; the others are verified."""
    monkeypatch.setattr(set_hooks(emulator), "auto_rotation_seconds", 3600)
    fields = {"pickup_timeout_minutes": 0.02, "poll_seconds": 0.3}
    state = rotate_customer_keys(request(azure_block, **fields), return_state=True)
    late = [d for d in fleet.des_ids if d.endswith("des-1")]
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(late) + len(revoked)} of "), state.message
    for resource in late:
        name = resource.rsplit("/", 1)[-1]
        assert f"{resource}: Disk encryption set {name} is still 'old key' after 1.2 s" in (
            state.message
        )


def test_a_set_whose_re_wrap_outlasts_the_wait_is_a_named_failure(
    azure_block: str, emulator: Emulator, fleet: FleetSeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set pinned to a version, updated, whose disks are not re-wrapped within
    `pickup_timeout_minutes` of its update fails by name, still 're-wrapping'."""
    monkeypatch.setattr(set_hooks(emulator), "rewrap_seconds", 3600)
    fields = {"pickup_timeout_minutes": 0.02, "poll_seconds": 0.3}
    state = rotate_customer_keys(request(azure_block, **fields), return_state=True)
    pinned = [d for d in fleet.des_ids if d.endswith(("des-0", "des-2"))]
    assert pinned
    for resource in pinned:
        name = resource.rsplit("/", 1)[-1]
        assert f"{resource}: Disk encryption set {name} is still 're-wrapping' after 1.2 s" in (
            state.message
        ), state.message


def test_a_key_another_run_holds_fails_alone_and_the_other_keys_rotate(
    azure_block: str, azure_credentials: AzureCredentials, fleet: FleetSeed
) -> None:
    """The keys' run locks are taken together under one lease; while another run holds one
    key's, each key takes its own: that key's row fails (its dependents skipped), the others
    rotate."""
    from tasks.run_lock import resource_lock

    before = versions(azure_credentials, fleet.key_ids)
    held = next(k for k in fleet.key_ids if k.endswith("/keys/k0"))
    held_key = KeyId.parse(held).versionless
    with resource_lock(held_key, wait=False):
        state = rotate_customer_keys(request(azure_block), return_state=True)
    assert state.is_failed()
    assert f"{held_key}: another run is working on this resource" in state.message
    held_name = KeyId.parse(held).name + "@" + KeyId.parse(held).vault_url
    assert versions(azure_credentials, fleet.key_ids) == {
        k: n if k == held_name else n + 1 for k, n in before.items()
    }


def test_a_listing_that_fails_for_a_while_is_asked_again_the_next_round(
    azure_block: str, emulator: Emulator, fleet: FleetSeed
) -> None:
    """The sets' listing answers 503 past the SDK's own retries (10): the pickups wait for
    the next round and are verified. A refused listing (403: a role on resource groups only)
    has each set read on its own; a refused read fails its set by name."""
    listing = r"/providers/Microsoft.Compute/diskEncryptionSets$"
    fault = emulator.faults.add(
        Fault("status", status=503, retry_after=0.01, method="GET", path=listing, count=11)
    )
    state = rotate_customer_keys(request(azure_block, rotation_id="r-list"), return_state=True)
    revoked = [d for d in fleet.des_ids if d.endswith("des-3")]
    assert state.message.startswith(f"{len(revoked)} of "), state.message
    assert fault.fired == 11
    emulator.faults.clear()

    def refuse(path: str) -> None:
        emulator.faults.add(
            Fault(
                "status",
                status=403,
                method="GET",
                path=path,
                count=None,
                code="AuthorizationFailed",
            )
        )

    refuse(listing)
    k0 = [k for k in fleet.key_ids if k.endswith("/keys/k0")]  # des-0 pinned, des-1 follows
    followers = [d for d in fleet.des_ids if d.endswith("des-1")]
    emulator.requests.clear()
    result = rotate_customer_keys(request(azure_block, rotation_id="r-unlisted", key_ids=k0))
    sets = [r for r in result.rows if r.kind == "disk-encryption-set"]
    assert len(sets) == 2 * len(followers) and {r.status for r in sets} == {"verified"}
    for follower in followers:
        assert [r for r in emulator.requests.find("GET", f"^{follower}$") if r.status == 200]
    for follower in followers:
        refuse(f"{follower}$")
    state = rotate_customer_keys(
        request(azure_block, rotation_id="r-refused", key_ids=k0), return_state=True
    )
    assert state.message.startswith(f"{len(followers)} of "), state.message
    for follower in followers:
        assert f"{follower}: reading it: AuthorizationFailed" in state.message, state.message


def test_a_few_pickups_left_in_a_long_listing_are_read_one_by_one(
    azure_block: str, emulator: Emulator, fleet: FleetSeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once fewer pickups are left than the subscription's listing has pages (here a page of
    one set), each is read on its own: a subscription of thousands of sets is not listed
    every round for a handful."""
    monkeypatch.setattr("clients.fleet_pickups.PAGE", 1)
    monkeypatch.setattr(set_hooks(emulator), "auto_rotation_seconds", 3)  # not at once
    emulator.requests.clear()
    rotate_customer_keys(request(azure_block, poll_seconds=0.5), return_state=True)
    for follower in [d for d in fleet.des_ids if d.endswith("des-1")]:
        sub = follower.split("/")[2]
        listings = emulator.requests.find(
            "GET", f"^/subscriptions/{sub}/providers/Microsoft.Compute/diskEncryptionSets$"
        )
        assert len(listings) == 1  # then 4 pages of one set against 1 left: read on its own
        assert emulator.requests.find("GET", f"^{follower}$"), follower


def test_keys_past_their_vaults_create_limit_rotate_once_each(
    azure_block: str, emulator: Emulator, azure: AzureClients
) -> None:
    """21 keys of one vault: Key Vault creates 20 software-key versions per window and
    refuses the next with a 429 that has no Retry-After; the create is sent again after a
    back-off (the service did not act on it), and every key gets exactly one new version."""
    from emulator.services.keyvault.throttling import VaultThrottle
    from tests.helpers import vault_with_key

    vault, first = vault_with_key(azure, emulator, "rg", "kv-many", "k0")
    keys = azure.keys(str(vault.properties.vault_uri))
    ids = [first] + [str(keys.create_rsa_key(f"k{n}", size=2048).id) for n in range(1, 21)]

    def clock() -> float:
        """The first window lasts until a transaction is refused (however slow the machine),
        the next ones a second each."""
        refused = any(r.status == 429 for r in emulator.requests.find())
        return time.monotonic() + 1000 if refused else 0.0

    assert emulator.state is not None
    emulator.state.keyvault.throttle = VaultThrottle(clock, window_seconds=1)
    emulator.requests.clear()
    result = rotate_customer_keys(request(azure_block, key_ids=ids))
    refused = [r.path for r in emulator.requests.find() if r.status == 429]
    assert any(path.endswith("/create") for path in refused), refused
    assert result.keys_rotated == 21 and result.failed == 0
    assert versions(AzureCredentials.load_saved(azure_block), ids) == {
        f"k{n}@{vault.properties.vault_uri.rstrip('/')}": 2 for n in range(21)
    }
