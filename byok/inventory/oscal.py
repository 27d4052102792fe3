"""The evidence as OSCAL assessment results, built with compliance-trestle's OSCAL models
(IBM's maintained implementation of the NIST schema), so what we emit is validated on
construction: one observation per resource part, one finding per control judged on it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from trestle.oscal import OSCAL_VERSION
from trestle.oscal import common as oscal
from trestle.oscal.assessment_results import AssessmentResults, ImportAp, Observation, Result

from byok.inventory.controls import CONTROLS
from byok.inventory.models import EvidenceRow, Verdict

_NAMESPACE = uuid.UUID("6f0c1b2e-5b7a-4c55-9e43-8d1f3c0b7a11")  # this project's uuid5 space


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\n".join(parts)))


def assessment_results(
    rows: Sequence[EvidenceRow], *, title: str, start: datetime, end: datetime
) -> AssessmentResults:
    """The rows of one run; not-applicable rows are left out, unreadable ones are findings
    not satisfied with the reason `other`."""
    run = _uuid(title, start.isoformat())
    observations: dict[tuple[str, str], Observation] = {}
    findings = []
    for row in rows:
        if row.verdict == Verdict.NOT_APPLICABLE:
            continue
        part = (row.resource_id.lower(), row.part)
        if part not in observations:
            observations[part] = Observation(
                uuid=_uuid(run, *part),
                title=f"{row.kind}: {row.resource_id} {row.part}".strip(),
                description=f"Encryption of {row.resource_id} {row.part}".strip()
                + (f", key {row.key_id} version {row.key_version}" if row.key_id else ""),
                methods=[oscal.Methods.EXAMINE],
                subjects=[
                    oscal.SubjectReference(
                        subject_uuid=_uuid(*part),
                        type=oscal.SubjectReferenceValidValues.inventory_item,
                        title=row.resource_id,
                    )
                ],
                collected=end,
            )
        satisfied = row.verdict == Verdict.COMPLIANT
        findings.append(
            oscal.Finding(
                uuid=_uuid(run, *part, row.control),
                title=f"{row.control}: {row.resource_id} {row.part}".strip(),
                description=row.rule,
                target=oscal.FindingTarget(
                    type=oscal.FindingTargetTypeValidValues.objective_id,
                    target_id=row.control,
                    status=oscal.ObjectiveStatus(
                        state=oscal.ObjectiveStatusStateValidValues.satisfied
                        if satisfied
                        else oscal.ObjectiveStatusStateValidValues.not_satisfied,
                        reason="pass"
                        if satisfied
                        else ("fail" if row.verdict == Verdict.NON_COMPLIANT else "other"),
                    ),
                ),
                related_observations=[
                    oscal.RelatedObservation(observation_uuid=observations[part].uuid)
                ],
            )
        )
    result = Result(
        uuid=run,
        title=title,
        description="Customer-managed key inventory: what each key protects and how it is kept.",
        start=start,
        end=end,
        reviewed_controls=oscal.ReviewedControls(
            control_selections=[
                oscal.ControlSelections(
                    include_controls=[oscal.SelectControlById(control_id=c.id) for c in CONTROLS]
                )
            ]
        ),
        observations=list(observations.values()) or None,
        findings=findings or None,
    )
    return AssessmentResults(
        uuid=_uuid("assessment-results", run),
        metadata=oscal.Metadata(
            title=title, last_modified=end, version="1", oscal_version=OSCAL_VERSION
        ),
        import_ap=ImportAp(href="#byok-customer-key-controls"),
        results=[result],
    )


def to_oscal_json(results: AssessmentResults) -> str:
    """The document as OSCAL JSON (with its `assessment-results` wrapper)."""
    return results.oscal_serialize_json(pretty=True)
