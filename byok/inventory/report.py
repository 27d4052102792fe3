"""The report built from evidence rows: counts per control and scope, the non-compliant
list first (markdown), CSV and JSON, and what changed since the previous run."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, TypeAdapter

from byok.inventory.models import EvidenceRow, Verdict

_ROWS = TypeAdapter(list[EvidenceRow])
_ORDER = {
    Verdict.NON_COMPLIANT: 0,
    Verdict.NO_ACCESS: 1,
    Verdict.COMPLIANT: 2,
    Verdict.NOT_APPLICABLE: 3,
}


def ordered(rows: Iterable[EvidenceRow]) -> list[EvidenceRow]:
    """Non-compliant first, then no access, compliant, not applicable; stable by id."""
    return sorted(rows, key=lambda r: (_ORDER[r.verdict], r.resource_id, r.part, r.control))


def counts(rows: Iterable[EvidenceRow]) -> dict[tuple[str, str], Counter[Verdict]]:
    """Verdict counts per (control, scope)."""
    table: dict[tuple[str, str], Counter[Verdict]] = {}
    for row in rows:
        table.setdefault((row.control, row.scope), Counter())[row.verdict] += 1
    return dict(sorted(table.items()))


def markdown(rows: Sequence[EvidenceRow], title: str = "Customer-managed keys") -> str:
    """A summary table, then every non-compliant and unreadable row."""
    lines = [
        f"# {title}",
        "",
        "| control | scope | compliant | non-compliant | no access | not applicable |",
        "|---|---|---|---|---|---|",
    ]
    for (control, scope), tally in counts(rows).items():
        lines.append(
            f"| {control} | {scope} | {tally[Verdict.COMPLIANT]} | "
            f"{tally[Verdict.NON_COMPLIANT]} | {tally[Verdict.NO_ACCESS]} | "
            f"{tally[Verdict.NOT_APPLICABLE]} |"
        )
    failing = [r for r in ordered(rows) if r.verdict in (Verdict.NON_COMPLIANT, Verdict.NO_ACCESS)]
    lines += ["", f"## Not compliant ({len(failing)})", ""]
    lines += [
        f"- `{r.resource_id}`{' ' + r.part if r.part else ''}: {r.control}: {r.rule}"
        for r in failing
    ] or ["None."]
    return "\n".join(lines) + "\n"


def to_csv(rows: Iterable[EvidenceRow]) -> str:
    """Every row, every field, in report order."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(EvidenceRow.model_fields))
    writer.writeheader()
    for row in ordered(rows):
        writer.writerow(row.model_dump(mode="json"))
    return out.getvalue()


def to_json(rows: Iterable[EvidenceRow]) -> str:
    """Every row as a JSON array, in report order."""
    return _ROWS.dump_json(ordered(rows), indent=1).decode()


def from_json(text: str) -> list[EvidenceRow]:
    """Rows written by `to_json` (a previous run's)."""
    return _ROWS.validate_json(text)


class Change(BaseModel):
    """Something that differs from the previous run."""

    resource_id: str
    part: str
    what: str


def changes(previous: Iterable[EvidenceRow], current: Iterable[EvidenceRow]) -> list[Change]:
    """Per resource part: new (flagged when without a customer key), gone, key version
    changed, and each control whose verdict changed."""
    before, after = _by_part(previous), _by_part(current)
    found: list[Change] = []
    for part, rows in after.items():
        first = next(iter(rows.values()))
        old_rows = before.get(part)
        if old_rows is None:
            plain = rows.get("customer-key")
            unkeyed = plain is not None and plain.verdict == Verdict.NON_COMPLIANT
            what = "new resource without customer key" if unkeyed else "new resource"
            found.append(Change(resource_id=first.resource_id, part=first.part, what=what))
            continue
        old_first = next(iter(old_rows.values()))
        if old_first.key_version != first.key_version:
            what = f"key version changed: {old_first.key_version} -> {first.key_version}"
            found.append(Change(resource_id=first.resource_id, part=first.part, what=what))
        for control, row in rows.items():
            old = old_rows.get(control)
            if old is not None and old.verdict != row.verdict:
                what = f"{control}: {old.verdict} -> {row.verdict}"
                found.append(Change(resource_id=row.resource_id, part=row.part, what=what))
    for part, rows in before.items():
        if part not in after:
            gone = next(iter(rows.values()))
            found.append(Change(resource_id=gone.resource_id, part=gone.part, what="resource gone"))
    return found


def _by_part(rows: Iterable[EvidenceRow]) -> dict[tuple[str, str], dict[str, EvidenceRow]]:
    """Rows grouped by resource part (ids compared case-insensitively, as Azure does)."""
    grouped: dict[tuple[str, str], dict[str, EvidenceRow]] = {}
    for row in rows:
        grouped.setdefault((row.resource_id.lower(), row.part), {})[row.control] = row
    return grouped
