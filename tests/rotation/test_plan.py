"""The fleet rotation's selection and plan, from discovery rows and key facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from byok.errors import InvalidRequest
from byok.parameters import parse_request
from byok.rotation import (
    ROTATION_TAG,
    Dependent,
    DependentKind,
    FleetRotationRequest,
    KeyFacts,
    PlannedKey,
    RotationPlan,
    RotationRow,
    Status,
    candidate_keys,
    default_rotation_id,
    plan_rotation,
    shares,
)
from tasks.task_runners import dask_runner_for

SUB = "00000000-0000-0000-0000-000000000001"
VAULT = "https://kv-a.vault.azure.net"
OTHER = "https://kv-b.vault.azure.net"
NOW = datetime(2026, 12, 2, tzinfo=UTC)


def des(name: str, key_url: str, auto: bool = False) -> dict:
    return {
        "id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/"
        f"diskEncryptionSets/{name}",
        "type": "Microsoft.Compute/diskEncryptionSets",
        "subscriptionId": SUB,
        "properties": {
            "activeKey": {"keyUrl": key_url},
            "rotationToLatestKeyVersionEnabled": auto,
        },
    }


def registry(name: str, key_id: str, status: str = "enabled") -> dict:
    return {
        "id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{name}",
        "type": "Microsoft.ContainerRegistry/registries",
        "subscriptionId": SUB,
        "properties": {
            "encryption": {
                "status": status,
                "keyVaultProperties": {"keyIdentifier": key_id, "identity": "client-1"},
            }
        },
    }


def vault(name: str, uri: str) -> dict:
    return {
        "id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{name}",
        "name": name,
        "type": "Microsoft.KeyVault/vaults",
        "subscriptionId": SUB,
        "properties": {"vaultUri": uri + "/"},
    }


ROWS = [
    des("set-pinned", f"{VAULT}/keys/k1/v1"),
    des("set-auto", f"{VAULT}/keys/k1/v1", auto=True),
    registry("acrpinned", f"{VAULT}/keys/k1/v1"),
    registry("acrfollows", f"{OTHER}/keys/k2"),
    registry("acrplatform", "", status="disabled"),
    des("set-elsewhere", "https://hsm.example/not-a-key-vault-key"),
    vault("kv-a", VAULT),
    vault("kv-b", OTHER),
]


def request(**fields: object) -> FleetRotationRequest:
    return FleetRotationRequest.model_validate({"azure_credentials_block": "b", **fields})


def facts(key_id: str, version: str, age_days: int = 100, **extra: object) -> KeyFacts:
    return KeyFacts(
        key_id=key_id,
        latest=f"{key_id}/{version}",
        created=NOW - timedelta(days=age_days),
        **extra,  # type: ignore[arg-type]
    )


def test_candidates_are_keys_with_their_sets_and_registries() -> None:
    keys = candidate_keys(ROWS, request())
    assert sorted(keys) == [f"{VAULT}/keys/k1", f"{OTHER}/keys/k2"]
    k1 = keys[f"{VAULT}/keys/k1"]
    assert [(d.name, d.kind, d.follows_latest) for d in k1] == [
        ("set-pinned", DependentKind.DISK_ENCRYPTION_SET, False),
        ("set-auto", DependentKind.DISK_ENCRYPTION_SET, True),
        ("acrpinned", DependentKind.REGISTRY, False),
    ]
    assert [(d.name, d.follows_latest) for d in keys[f"{OTHER}/keys/k2"]] == [("acrfollows", True)]


def test_candidates_filtered_by_key_id_and_vault() -> None:
    by_id = candidate_keys(ROWS, request(key_ids=[f"{VAULT}/keys/K1/v1", f"{VAULT}/keys/unused"]))
    assert {k: len(d) for k, d in by_id.items()} == {
        f"{VAULT}/keys/K1": 3,  # ids compare case-insensitively, versions dropped
        f"{VAULT}/keys/unused": 0,
    }
    assert list(candidate_keys(ROWS, request(key_vaults=["kv-b"]))) == [f"{OTHER}/keys/k2"]
    assert list(candidate_keys(ROWS, request(key_vaults=[VAULT + "/"]))) == [f"{VAULT}/keys/k1"]


def test_plan_makes_versions_for_due_keys_and_names_the_rest() -> None:
    k1, k2 = f"{VAULT}/keys/k1", f"{OTHER}/keys/k2"
    candidates = candidate_keys(ROWS, request())
    known = {k1.lower(): facts(k1, "v1", age_days=100), k2.lower(): facts(k2, "v9", age_days=5)}
    plan = plan_rotation(candidates, known, request(older_than_days=90), "r1", NOW)
    assert [(k.key_id, k.make_version) for k in plan.rotations] == [(k1, True)]
    assert [(r.key_id, r.status, r.reason) for r in plan.skipped] == [
        (k2, Status.SKIPPED, "not old enough, nor near expiry")
    ]
    rows = plan.rows()
    assert [(r.dependent_id.rsplit("/", 1)[-1], r.action, r.status) for r in rows[1:]] == [
        ("", "new version", Status.PLANNED),
        ("set-pinned", "update", Status.PLANNED),
        ("set-auto", "wait for pickup", Status.PLANNED),
        ("acrpinned", "update", Status.PLANNED),
    ]


def test_plan_resumes_its_own_rotation_and_reuses_a_policy_version() -> None:
    k1, k2 = f"{VAULT}/keys/k1", f"{OTHER}/keys/k2"
    candidates = candidate_keys(ROWS, request())
    known = {
        # made by this rotation yesterday: young, but resumed (not made again)
        k1.lower(): facts(k1, "v2", age_days=0, tags={ROTATION_TAG: "r1"}),
        k2.lower(): facts(k2, "v9", age_days=0),
    }
    plan = plan_rotation(candidates, known, request(older_than_days=30), "r1", NOW)
    assert [(k.key_id, k.make_version, k.reason) for k in plan.rotations] == [
        (k1, False, "resuming rotation r1")
    ]
    # no criterion: a version no pinned dependent uses yet (a policy made it) is reused
    k1_set = {k1: [d for d in candidates[k1] if not d.follows_latest]}
    plan = plan_rotation(k1_set, {k1.lower(): facts(k1, "v5")}, request(), "r2", NOW)
    assert [(k.make_version, k.latest) for k in plan.rotations] == [(False, f"{k1}/v5")]
    plan = plan_rotation(k1_set, {k1.lower(): facts(k1, "v1")}, request(), "r2", NOW)
    assert [k.make_version for k in plan.rotations] == [True]


def test_plan_refuses_unreadable_disabled_and_untagged_keys() -> None:
    k1, k2 = f"{VAULT}/keys/k1", f"{OTHER}/keys/k2"
    candidates = candidate_keys(ROWS, request())
    known = {
        k1.lower(): KeyFacts(key_id=k1, error="cannot read the key: Forbidden: no get"),
        k2.lower(): facts(k2, "v9", enabled=False),
    }
    plan = plan_rotation(candidates, known, request(), "r1", NOW)
    assert plan.rotations == []
    assert [(r.status, r.reason) for r in plan.skipped] == [
        (Status.FAILED, "cannot read the key: Forbidden: no get"),
        (Status.SKIPPED, "its latest version is disabled"),
    ]
    tagged = {k1.lower(): facts(k1, "v1", tags={"team": "a"}), k2.lower(): facts(k2, "v9")}
    plan = plan_rotation(candidates, tagged, request(tags={"team": "a"}), "r1", NOW)
    assert [k.key_id for k in plan.rotations] == [k1]


def test_expiry_criterion() -> None:
    k1 = f"{VAULT}/keys/k1"
    candidates = {k1: []}
    soon = facts(k1, "v1", age_days=1, expires=NOW + timedelta(days=10))
    later = facts(k1, "v1", age_days=1, expires=NOW + timedelta(days=60))
    wanted = request(expiring_within_days=30, older_than_days=365)
    assert plan_rotation(candidates, {k1.lower(): soon}, wanted, "r", NOW).rotations
    assert not plan_rotation(candidates, {k1.lower(): later}, wanted, "r", NOW).rotations


def test_rotation_id_is_stable_per_selection_and_day() -> None:
    a = default_rotation_id(request(tags={"team": "a"}), NOW)
    assert a == default_rotation_id(request(tags={"team": "a"}, plan_only=True), NOW)
    assert a != default_rotation_id(request(tags={"team": "b"}), NOW)
    assert a != default_rotation_id(request(tags={"team": "a"}), NOW + timedelta(days=1))
    assert a.endswith("-20261202")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key_ids": ["kv/keys/x"]}, "key_ids[0] = 'kv/keys/x': must be https://"),
        ({"dask_address": "host:8786"}, "dask_address = 'host:8786': must be a URL"),
        ({"older_than_days": -1}, "request.older_than_days = -1: "),
        ({"max_concurrency": 257}, "max_concurrency = 257: .*less than or equal to 256"),
    ],
)
def test_bad_requests_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_request(FleetRotationRequest, {"azure_credentials_block": "b", **fields})


def test_confidential_vm_sets_are_held_back_with_the_flow_that_rotates_them() -> None:
    k1, k3 = f"{VAULT}/keys/k1", f"{VAULT}/keys/k3"
    cvm = des("set-cvm", f"{VAULT}/keys/k1/v1")
    cvm["properties"]["encryptionType"] = "ConfidentialVmEncryptedWithCustomerKey"
    only = des("set-cvm-only", f"{VAULT}/keys/k3/v1")
    only["properties"]["encryptionType"] = "ConfidentialVmEncryptedWithCustomerKey"
    candidates = candidate_keys([*ROWS, cvm, only], request())
    k2 = f"{OTHER}/keys/k2"
    known = {k.lower(): facts(k, "v1") for k in (k1, k2, k3)}
    plan = plan_rotation(candidates, known, request(), "r1", NOW)
    assert [k.key_id for k in plan.rotations] == [k1, k2]
    assert "set-cvm" not in {d.name for d in plan.rotations[0].dependents}
    held = {(r.key_id, r.dependent_id.rsplit("/", 1)[-1], r.status) for r in plan.skipped}
    assert held == {
        (k1, "set-cvm", Status.SKIPPED),
        (k3, "set-cvm-only", Status.SKIPPED),
        (k3, "", Status.SKIPPED),
    }
    reasons = {r.dependent_id.rsplit("/", 1)[-1]: r.reason for r in plan.skipped}
    assert "rotate-confidential-vm-key" in reasons["set-cvm"]
    assert reasons[""] == "only confidential-VM sets use it"


def test_plan_only_is_also_read_under_its_former_name_dry_run() -> None:
    assert request(dry_run=True).plan_only and request(plan_only=True).plan_only
    assert "plan_only" in FleetRotationRequest.model_json_schema()["properties"]


def dependent(sub: str, name: str) -> Dependent:
    return Dependent(
        resource_id=f"/subscriptions/{sub}/resourceGroups/rg/providers/"
        f"Microsoft.Compute/diskEncryptionSets/{name}",
        kind=DependentKind.DISK_ENCRYPTION_SET,
        key_url=f"{VAULT}/keys/k/v1",
        follows_latest=False,
    )


def test_moves_take_the_subscriptions_in_turn() -> None:
    """Dependents of keys in different subscriptions alternate, each with its key's row."""
    other = "00000000-0000-0000-0000-000000000002"
    keys = [
        PlannedKey(
            key_id=f"{VAULT}/keys/a",
            latest="v1",
            make_version=True,
            reason="due",
            dependents=[dependent(SUB, "a1"), dependent(SUB, "a2"), dependent(SUB, "a3")],
        ),
        PlannedKey(
            key_id=f"{OTHER}/keys/b",
            latest="v1",
            make_version=True,
            reason="due",
            dependents=[dependent(other, "b1")],
        ),
    ]
    rows = [RotationRow(key_id=k.key_id, action="new version", status=Status.ROTATED) for k in keys]
    moves = RotationPlan(rotation_id="r", rotations=keys).moves(rows)
    assert [(d.name, row.key_id) for d, row in moves] == [
        ("a1", keys[0].key_id),
        ("b1", keys[1].key_id),
        ("a2", keys[0].key_id),
        ("a3", keys[0].key_id),
    ]
    # each subscription dealt over the shares (the next one starting at the next share), so
    # every share draws on every subscription's buckets; each share keeps the order of moves
    assert [[d.name for d, _ in share] for share in shares(moves, 2)] == [
        ["a1", "a3"],
        ["b1", "a2"],
    ]
    assert [[d.name for d, _ in share] for share in shares(moves, 8)] == [
        ["a1"],
        ["b1", "a2"],
        ["a3"],
    ]


@pytest.mark.parametrize(("asked", "threads"), [(None, 43), (32, 11)])
def test_a_local_dask_cluster_shares_max_concurrency_threads(
    asked: int | None, threads: int
) -> None:
    """A move mostly waits on ARM: the local cluster's workers together run as many threads
    as the thread runner may (Dask's default is one per core)."""
    request = FleetRotationRequest(
        azure_credentials_block="b", task_runner="dask", dask_workers=3, max_concurrency=asked
    )
    runner = dask_runner_for(request)
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == threads


@pytest.mark.parametrize(
    ("subscriptions", "asked", "threads"),
    [(0, None, 32), (1, None, 32), (3, None, 96), (10, None, 128), (10, 7, 7)],
)
def test_moves_at_once_scale_with_the_subscriptions_unless_asked(
    subscriptions: int, asked: int | None, threads: int
) -> None:
    """ARM paces each subscription apart: 32 moves at once for each, at most 128, unless
    the request says how many."""
    subs = [f"00000000-0000-0000-0000-{i:012d}" for i in range(subscriptions)]
    key = PlannedKey(
        key_id=f"{VAULT}/keys/a",
        latest="v1",
        make_version=True,
        reason="due",
        dependents=[dependent(sub, f"d{i}-{n}") for i, sub in enumerate(subs) for n in range(2)],
    )
    request = FleetRotationRequest(azure_credentials_block="b", max_concurrency=asked)
    assert RotationPlan(rotation_id="r", rotations=[key]).concurrency(request) == threads
