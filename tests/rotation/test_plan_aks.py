"""KMS clusters in the fleet rotation's plan: found by their key, held back with the reason
when the two-slot rule stops them (their key not rotated at all when they follow the latest
version), and a key only versionless dependents use still gets a new version."""

from __future__ import annotations

from datetime import UTC, datetime

from byok.rotation import (
    DependentKind,
    FleetRotationRequest,
    KeyFacts,
    Status,
    candidate_keys,
    hold_clusters,
    plan_rotation,
)
from tests.rotation.test_plan import SUB, VAULT, des

NOW = datetime(2026, 12, 2, tzinfo=UTC)
KEY = f"{VAULT}/keys/k"


def cluster(name: str, key_id: str, enabled: bool = True) -> dict:
    return {
        "id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
        f"Microsoft.ContainerService/managedClusters/{name}",
        "type": "Microsoft.ContainerService/managedClusters",
        "subscriptionId": SUB,
        "properties": {
            "securityProfile": {"azureKeyVaultKms": {"enabled": enabled, "keyId": key_id}}
        },
    }


def plan_of(rows: list[dict], latest: str = f"{KEY}/v1"):
    request = FleetRotationRequest(azure_credentials_block="b")
    facts = {KEY.lower(): KeyFacts(key_id=KEY, latest=latest)}
    return plan_rotation(candidate_keys(rows, request), facts, request, "r1", NOW)


def test_kms_clusters_are_dependents_of_their_key_with_their_experience() -> None:
    rows = [
        cluster("legacy", f"{KEY}/v1"),
        cluster("new", KEY),
        cluster("off", f"{KEY}/v1", enabled=False),
        des("set", f"{KEY}/v1"),
    ]
    (key,) = plan_of(rows).rotations
    found = {d.name: (d.kind, d.follows_latest, d.action) for d in key.dependents}
    assert found == {
        "legacy": (DependentKind.AKS_CLUSTER, False, "update, re-write Secrets"),
        "new": (DependentKind.AKS_CLUSTER, True, "update, re-write Secrets"),
        "set": (DependentKind.DISK_ENCRYPTION_SET, False, "update"),
    }
    assert key.make_version


def test_a_key_only_versionless_dependents_use_gets_a_new_version() -> None:
    (key,) = plan_of([cluster("new", KEY)]).rotations
    assert key.make_version and key.latest == f"{KEY}/v1"


def test_a_refused_pinned_cluster_is_a_failed_row_and_the_key_still_rotates() -> None:
    plan = plan_of([cluster("legacy", f"{KEY}/v1"), des("set", f"{KEY}/v1")])
    legacy = plan.rotations[0].dependents[0].resource_id
    held = hold_clusters(plan, {legacy: "2 Secret(s) still need v0"})
    (key,) = held.rotations
    assert [d.name for d in key.dependents] == ["set"]
    (row,) = held.skipped
    assert (row.dependent_id, row.kind, row.status, row.reason) == (
        legacy,
        DependentKind.AKS_CLUSTER,
        Status.FAILED,
        "2 Secret(s) still need v0",
    )
    planned = {r.dependent_id: r.status for r in held.rows()}
    assert planned[legacy] == Status.FAILED and len(planned) == 3  # key, set, cluster


def test_a_refused_cluster_following_the_latest_version_stops_its_key() -> None:
    plan = plan_of([cluster("new", KEY), des("set", f"{KEY}/v1")])
    ids = {d.name: d.resource_id for d in plan.rotations[0].dependents}
    held = hold_clusters(plan, {ids["new"]: "Secrets still need v0"})
    assert held.rotations == []
    rows = {(r.dependent_id, r.status, r.reason) for r in held.skipped}
    assert rows == {
        (ids["new"], Status.FAILED, "Secrets still need v0"),
        ("", Status.SKIPPED, "cluster(s) new follow the latest version and may not rotate"),
        (ids["set"], Status.SKIPPED, "the key did not rotate"),
    }
    assert plan.rotations and hold_clusters(plan, {}) == plan  # nothing refused: unchanged
