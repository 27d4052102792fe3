"""The revocation drill's pure rules: confirmation, dependents per resource, the grant
records on the key, verdicts."""

from __future__ import annotations

import pytest

from byok.drill import (
    Check,
    Observation,
    RevocationDrillRequest,
    check_confirmation,
    check_dependents,
    grant_tags,
    tagged_principals,
    targets,
    verdict,
)
from byok.errors import InvalidRequest
from byok.inventory.blast import Dependent
from byok.inventory.models import Kind

KEY = "https://kv1.vault.azure.net/keys/cmk/0123"
VM = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"


def request(**overrides: object) -> RevocationDrillRequest:
    return RevocationDrillRequest(azure_credentials_block="b", key_id=KEY, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("confirm", ["", "CMK", KEY, "yes"])
def test_confirmation_is_the_key_name(confirm: str) -> None:
    with pytest.raises(InvalidRequest, match="must be the key's name 'cmk'"):
        check_confirmation(request(confirm=confirm))
    check_confirmation(request(confirm="cmk"))


def test_one_target_per_resource_and_the_dependents_limit() -> None:
    dependents = [
        Dependent(resource_id=VM, kind=Kind.VIRTUAL_MACHINE, part=part, path=[KEY, VM])
        for part in ("os-disk", "lun-0", "os-disk")
    ]
    dependents.append(
        Dependent(resource_id="/x/des", kind=Kind.DISK_ENCRYPTION_SET, part="", path=[])
    )
    found = targets(dependents)
    assert [(t.resource_id, t.parts, t.check) for t in found] == [
        (VM, ["os-disk", "lun-0"], Check.POWER_STATE),
        ("/x/des", [""], Check.NONE),
    ]
    with pytest.raises(InvalidRequest, match="the key has 2 dependents") as refused:
        check_dependents(request(max_dependents=1), found)
    assert refused.value.field == "max_dependents"
    check_dependents(request(max_dependents=1, allow_more_dependents=True), found)


def test_grant_records_fit_key_vault_tags_and_read_back() -> None:
    principals = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(8)]
    tags = grant_tags(principals)
    assert list(tags) == ["byok-drill-grants", "byok-drill-grants-1"]
    assert all(len(v) <= 256 for v in tags.values())
    assert tagged_principals({**tags, "owner": "team"}) == principals


def test_verdicts() -> None:
    seen = Observation(at="2026-01-01T00:00:00Z", state="PowerState/stopped")  # type: ignore[arg-type]
    assert verdict(Check.POWER_STATE, seen, seen) == "proved"
    assert verdict(Check.POWER_STATE, None, seen) == "failed: no failure observed"
    assert verdict(Check.DATA_OPERATION, seen, None) == "failed: did not recover"
    assert verdict(Check.NONE, None, None).startswith("not observable")
    stopped_before = verdict(Check.POWER_STATE, seen, seen, seen)
    assert stopped_before == "failed: not healthy before the drill (PowerState/stopped)"
