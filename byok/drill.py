"""The revocation drill's request, rules and evidence (Prefect-free): take a key's access
away, prove each dependent reports the failure Azure reports, restore, prove each recovers.

What Azure reports, per dependent kind: a VM whose disks' set cannot use its key shuts down
("If you disable or delete your key, any VMs with disks using that key will automatically shut
down", learn.microsoft.com/azure/virtual-machines/disk-encryption) and does not start again by
itself; a registry's data operations fail with KeyVaultAccessForbidden
(learn.microsoft.com/azure/container-registry/tutorial-rotate-revoke-customer-managed-keys).
Sets, disks, image versions and clusters report nothing of their own: they are listed, not
proved."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from byok.errors import InvalidRequest
from byok.inventory.blast import Dependent
from byok.inventory.models import Kind
from byok.inventory.request import FleetScope, KeyVaultKeyId
from byok.keyvault_ids import KeyId
from byok.outcomes import PLAN_ONLY

# Tag on a key version the drill disabled (value: when), and on the key's latest version for
# the grants it removed (value: principal ids): what a re-run restores after a crash.
REVOKED_TAG = "byok-drill-revoked"
GRANTS_TAG = "byok-drill-grants"
# Key Vault tag values hold at most 256 characters: six principal ids per tag.
PRINCIPALS_PER_TAG = 6


class Method(StrEnum):
    """How access is taken away."""

    DISABLE_KEY = "disable-key"
    REMOVE_GRANT = "remove-grant"


class Check(StrEnum):
    """What proves a dependent's failure and recovery."""

    POWER_STATE = "power-state"  # VM: PowerState/stopped, then started again
    DATA_OPERATION = "data-operation"  # registry: importImage refused, then accepted
    NONE = "none"  # nothing Azure reports on the resource itself


CHECKS = {Kind.VIRTUAL_MACHINE: Check.POWER_STATE, Kind.REGISTRY: Check.DATA_OPERATION}


class RevocationDrillRequest(FleetScope):
    """One key, the confirmation, how to revoke, and where to look for its dependents."""

    key_id: KeyVaultKeyId = Field(
        ..., description="Key Vault key id (a version in it is ignored: the whole key is drilled)."
    )
    confirm: str = Field(
        "",
        description="Type the key's name to confirm: its dependents lose access to their data "
        "until the drill restores it.",
    )
    method: Method = Field(
        Method.DISABLE_KEY,
        description="disable-key: disable every enabled version of the key; remove-grant: "
        "remove the dependents' identities' key access.",
    )
    max_dependents: int = Field(
        10, ge=0, description="Refuse a key with more dependents than this…"
    )
    allow_more_dependents: bool = Field(False, description="…unless this is set.")
    timeout_minutes: float = Field(
        10, gt=0, description="How long each dependent may take to fail or to recover."
    )
    plan_only: bool = PLAN_ONLY


def check_confirmation(request: RevocationDrillRequest) -> None:
    """InvalidRequest unless `confirm` is the key's name."""
    name = KeyId.parse(request.key_id).name
    if request.confirm != name:
        raise InvalidRequest(
            "confirm", request.confirm, f"must be the key's name '{name}' to run the drill"
        )


class Target(BaseModel):
    """One resource to prove, with the parts of it the key protects."""

    resource_id: str
    kind: Kind
    parts: list[str]
    check: Check


def targets(dependents: list[Dependent]) -> list[Target]:
    """The dependents as one target per resource (first-seen order)."""
    found: dict[str, Target] = {}
    for d in dependents:
        key = d.resource_id.lower()
        if key not in found:
            found[key] = Target(
                resource_id=d.resource_id,
                kind=d.kind,
                parts=[],
                check=CHECKS.get(d.kind, Check.NONE),
            )
        if d.part not in found[key].parts:
            found[key].parts.append(d.part)
    return list(found.values())


def check_dependents(request: RevocationDrillRequest, found: list[Target]) -> None:
    """InvalidRequest when the key has more dependents than allowed."""
    if len(found) > request.max_dependents and not request.allow_more_dependents:
        raise InvalidRequest(
            "max_dependents",
            request.max_dependents,
            f"the key has {len(found)} dependents; raise max_dependents or set "
            "allow_more_dependents to drill it anyway",
        )


def grant_tags(principals: list[str]) -> dict[str, str]:
    """The tags recording removed grants (`byok-drill-grants`, `-1`, … by six)."""
    tags = {}
    for i in range(0, len(principals), PRINCIPALS_PER_TAG):
        name = GRANTS_TAG + (f"-{i // PRINCIPALS_PER_TAG}" if i else "")
        tags[name] = ",".join(principals[i : i + PRINCIPALS_PER_TAG])
    return tags


def tagged_principals(tags: dict[str, str]) -> list[str]:
    """The principal ids `grant_tags` recorded."""
    return [
        p
        for name, value in sorted(tags.items())
        if name == GRANTS_TAG or name.startswith(GRANTS_TAG + "-")
        for p in value.split(",")
        if p
    ]


class Observation(BaseModel):
    """What a dependent reported, and when."""

    at: datetime
    state: str


class EvidenceRow(BaseModel):
    """One dependent through the drill."""

    resource_id: str
    kind: Kind
    parts: list[str]
    check: Check
    before: Observation | None = None
    revoked: Observation | None = None
    restored: Observation | None = None
    verdict: str = Field(description="proved, failed (with the reason) or not observable")


class Revocation(BaseModel):
    """What was taken away: the versions disabled or the principals whose grant was removed."""

    method: Method
    versions: list[str] = Field(default_factory=list)
    principals: list[str] = Field(default_factory=list)
    at: datetime | None = None


class RevocationDrillResult(BaseModel):
    """The evidence record."""

    key_id: str
    method: Method
    restored_leftover: Revocation | None = Field(
        None, description="A crashed run's revocation this run restored first."
    )
    revocation: Revocation
    revoked_at: datetime
    restored_at: datetime
    rows: list[EvidenceRow]

    @property
    def failed(self) -> list[EvidenceRow]:
        """Rows whose failure or recovery was not proved."""
        return [r for r in self.rows if r.verdict.startswith("failed")]


HEALTHY = frozenset({"PowerState/running", "not checked"})


def observable(target: Target, before: Observation | None) -> bool:
    """Whether the drill observes the target: it reports failures, and was healthy before
    (a VM stopped before the drill is left stopped, not started by the drill)."""
    return target.check is not Check.NONE and (before is None or before.state in HEALTHY)


def verdict(
    check: Check,
    revoked: Observation | None,
    restored: Observation | None,
    before: Observation | None = None,
) -> str:
    """The row's verdict from what was observed (None: nothing seen in time). A VM that was
    not running before the revocation proves nothing by being stopped."""
    if check is Check.NONE:
        return "not observable (Azure reports the failure on the resources that use it)"
    if before is not None and before.state not in HEALTHY:
        return f"failed: not healthy before the drill ({before.state})"
    if revoked is None or restored is None:
        return "failed: " + ("no failure observed" if revoked is None else "did not recover")
    return "proved"


def evidence_table(result: RevocationDrillResult) -> list[dict[str, str]]:
    """The evidence as table rows (for the artifact)."""
    return [
        {
            "resource": r.resource_id,
            "kind": r.kind.value,
            "parts": ", ".join(r.parts),
            "before": f"{r.before.state} at {r.before.at.isoformat()}" if r.before else "",
            "revoked": f"{r.revoked.state} at {r.revoked.at.isoformat()}" if r.revoked else "",
            "restored": f"{r.restored.state} at {r.restored.at.isoformat()}" if r.restored else "",
            "verdict": r.verdict,
        }
        for r in result.rows
    ]


def evidence_markdown(result: RevocationDrillResult) -> str:
    """The evidence record's summary."""
    taken = (
        f"disabled versions {', '.join(result.revocation.versions) or '(none enabled)'}"
        if result.method is Method.DISABLE_KEY
        else f"removed the key access of {', '.join(result.revocation.principals) or '(none)'}"
    )
    lines = [
        f"# Revocation drill of {result.key_id}",
        "",
        f"- Revoked at {result.revoked_at.isoformat()}: {taken}",
        f"- Restored at {result.restored_at.isoformat()}",
        f"- Dependents: {len(result.rows)}, proved: "
        f"{sum(r.verdict == 'proved' for r in result.rows)}, failed: {len(result.failed)}",
    ]
    if result.restored_leftover:
        lines.append(
            "- A crashed run's revocation was restored first "
            f"({result.restored_leftover.method.value})"
        )
    return "\n".join(lines)
