"""The report: counts, non-compliant first, CSV/JSON round trips, changes between runs, and
OSCAL assessment results that compliance-trestle accepts."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from trestle.oscal.assessment_results import AssessmentResults

from byok.inventory.controls import Limits, evaluate
from byok.inventory.models import Finding, KeyState, Kind, RotationPolicy, Verdict
from byok.inventory.oscal import assessment_results, to_oscal_json
from byok.inventory.report import changes, counts, from_json, markdown, ordered, to_csv, to_json

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SUB_A, SUB_B = "sub-a", "sub-b"


def des(name: str, sub: str, version: str = "v1", age: int = 10) -> Finding:
    return Finding(
        resource_id=f"/subscriptions/{sub}/resourceGroups/rg/providers/"
        f"Microsoft.Compute/diskEncryptionSets/{name}",
        kind=Kind.DISK_ENCRYPTION_SET,
        scope=sub,
        region="westeurope",
        customer_key=True,
        key=KeyState(
            key_id=f"https://kv.vault.azure.net/keys/k/{version}",
            version=version,
            created=NOW - timedelta(days=age),
            expires=NOW + timedelta(days=300),
            rotation_policy=RotationPolicy(rotate_after_days=60),
            store_soft_delete=True,
            store_purge_protection=True,
        ),
    )


def disk(name: str, sub: str, customer_key: bool) -> Finding:
    return Finding(
        resource_id=f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/disks/{name}",
        kind=Kind.DISK,
        scope=sub,
        customer_key=customer_key,
    )


def run(findings: list[Finding]):
    return evaluate(findings, Limits(now=NOW))


def test_counts_per_control_and_scope_and_failures_first() -> None:
    rows = run([des("d1", SUB_A), des("old", SUB_B, age=200), disk("plain", SUB_A, False)])
    table = counts(rows)
    assert table[("key-age", SUB_B)][Verdict.NON_COMPLIANT] == 1
    assert table[("key-age", SUB_A)][Verdict.COMPLIANT] == 1
    assert table[("customer-key", SUB_A)][Verdict.NON_COMPLIANT] == 1
    first = ordered(rows)[:2]
    assert {r.verdict for r in first} == {Verdict.NON_COMPLIANT}
    text = markdown(rows)
    assert "## Not compliant (2)" in text
    assert "disks/plain`: customer-key: encrypted with platform-managed keys" in text


def test_csv_and_json_hold_every_row_and_field() -> None:
    rows = run([des("d1", SUB_A), disk("plain", SUB_A, False)])
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(parsed) == len(rows)
    assert parsed[0]["verdict"] == "non-compliant" and parsed[0]["control"] == "customer-key"
    assert from_json(to_json(rows)) == ordered(rows)
    assert json.loads(to_json(rows))[0]["resource_id"].endswith("/disks/plain")


def test_changes_between_runs() -> None:
    before = run([des("d1", SUB_A), des("gone", SUB_A)])
    after = run([des("d1", SUB_A, version="v2"), disk("new", SUB_B, False)])
    what = {(c.resource_id.rsplit("/", 1)[-1], c.what) for c in changes(before, after)}
    assert what == {
        ("d1", "key version changed: v1 -> v2"),
        ("gone", "resource gone"),
        ("new", "new resource without customer key"),
    }
    assert changes(after, after) == []


def test_oscal_assessment_results_validate_and_carry_each_finding() -> None:
    rows = run([des("d1", SUB_A), disk("plain", SUB_A, False)])
    document = assessment_results(rows, title="Inventory", start=NOW, end=NOW)
    text = to_oscal_json(document)
    data = json.loads(text)["assessment-results"]
    again = AssessmentResults.model_validate(data)  # the schema's model accepts it back
    result = again.results[0]
    states = {f.target.target_id: f.target.status.state.value for f in result.findings}
    assert states["customer-key"] == "not-satisfied"
    assert states["key-age"] == "satisfied"
    assert len(result.observations) == 2  # one per resource
    assert len(result.findings) == len([r for r in rows if r.verdict != Verdict.NOT_APPLICABLE])
