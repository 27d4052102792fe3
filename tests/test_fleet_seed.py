"""The seeded fleet: what it holds in the emulator, its compliant and non-compliant mix, and a
re-run that makes nothing twice."""

from __future__ import annotations

from collections import Counter

from console.emulator_blocks import emulator_azure_credentials
from console.fleet_seed import TYPES, seed_fleet
from emulator.server import Emulator


def stored(emulator: Emulator) -> dict[str, dict]:
    """Every ARM resource of the fleet's kinds, by lower-case id."""
    kinds = {t.lower() for t in TYPES}
    return {k: r for k, r in emulator.arm.resources.items() if r["type"].lower() in kinds}


def test_a_fleet_over_two_subscriptions_and_a_rerun_that_makes_nothing(
    emulator: Emulator,
) -> None:
    assert emulator.state is not None
    subs = emulator.state.ensure_subscriptions(2)
    block = emulator_azure_credentials(emulator, polling_interval_seconds=0.01)

    fleet = seed_fleet(block, subscriptions=subs, resources=40)

    resources = stored(emulator)
    by_kind = Counter(TYPES[next(t for t in TYPES if t.lower() == r["type"].lower())]
                      for r in resources.values())  # fmt: skip
    assert dict(by_kind) == {k: n for k, n in fleet.counts.items() if k != "keys"}
    assert fleet.created == fleet.resources == len(resources) >= 40
    assert {r["id"].split("/")[2] for r in resources.values()} == set(subs)
    assert fleet.counts["keys"] == 6 and len(fleet.key_ids) == 6

    sets = [resources[d.lower()] for d in fleet.des_ids]
    vaults = {r["id"].lower(): r for r in resources.values() if r["type"].endswith("vaults")}
    granted = {p["objectId"] for v in vaults.values() for p in v["properties"]["accessPolicies"]}
    revoked = [s for s in sets if s["identity"]["principalId"] not in granted]
    assert [s["name"] for s in revoked] == ["des-3", "des-3"]  # one per subscription
    assert all(v["properties"]["enablePurgeProtection"] for v in vaults.values())
    assert sum(s["properties"]["rotationToLatestKeyVersionEnabled"] for s in sets) == 2
    keyvault = emulator.state.keyvault
    for data in keyvault.vaults.values():
        assert {n: len(k.versions) for n, k in data.keys.items()} == {"k0": 1, "k1": 2, "k2": 1}
        assert data.keys["k1"].rotation_policy is None
        assert data.keys["k0"].rotation_policy and data.keys["k2"].rotation_policy
        old = data.keys["k1"].versions[0].version
        on_old = [s for s in sets if s["properties"]["activeKey"]["keyUrl"].endswith(old)]
        assert [s["name"] for s in on_old] == ["des-2"]

    registries = [resources[r.lower()]["properties"]["encryption"] for r in fleet.registry_ids]
    assert Counter(e["status"] for e in registries) == {"enabled": 4, "disabled": 2}
    rotating = [e["keyVaultProperties"]["keyRotationEnabled"] for e in registries if
                e["status"] == "enabled"]  # fmt: skip
    assert sorted(rotating) == [False, False, True, True]

    disks = [r for r in resources.values() if r["type"].endswith("disks")]
    on_platform = [
        d for d in disks if d["properties"]["encryption"]["type"].endswith("PlatformKey")
    ]
    on_sets = {d["properties"]["encryption"].get("diskEncryptionSetId", "").lower() for d in disks}
    assert 0 < len(on_platform) < len(disks)
    assert on_sets - {""} <= {d.lower() for d in fleet.des_ids}

    again = seed_fleet(block, subscriptions=subs, resources=40)

    assert again.created == 0
    assert (again.counts, again.key_ids, again.des_ids) == (
        fleet.counts,
        fleet.key_ids,
        fleet.des_ids,
    )
    assert set(stored(emulator)) == set(resources)
    for data in keyvault.vaults.values():
        assert [len(k.versions) for k in data.keys.values()] == [1, 2, 1]
    granted_again = {
        p["objectId"]
        for v in stored(emulator).values()
        if v["type"].endswith("vaults")
        for p in v["properties"]["accessPolicies"]
    }
    assert granted_again == granted
