"""The controls the inventory judges, each with the public control ids it evidences.

Azure Policy ids are the built-in definitions' names (Microsoft Learn, "Azure Policy built-in
definitions for Key Vault" and the per-service CMK definitions); CIS numbers follow the CIS
Microsoft Azure Foundations Benchmark v5.0.0 (section 8.3, Key Vault); MCSB is the Microsoft
cloud security benchmark v1 (data protection: DP-5 customer-managed keys, DP-6 key
management, DP-8 key repository security)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from byok.inventory.models import EvidenceRow, Finding, Kind, Verdict

Judgement = tuple[Verdict, str]


@dataclass(frozen=True)
class Limits:
    """The thresholds a run judges by, and its clock."""

    now: datetime
    max_key_age_days: int = 90
    min_days_before_expiry: int = 30


@dataclass(frozen=True)
class Control:
    """A rule, what it applies to, and the public control ids it evidences."""

    id: str
    title: str
    references: tuple[str, ...]
    applies_to: frozenset[Kind]
    judge: Callable[[Finding, Limits], Judgement]


def key_age_days(finding: Finding, now: datetime) -> int | None:
    """Whole days since the key version in use was created."""
    if finding.key is None or finding.key.created is None:
        return None
    return (now - finding.key.created).days


def _customer_key(finding: Finding, limits: Limits) -> Judgement:
    if not finding.customer_key:
        return Verdict.NON_COMPLIANT, "encrypted with platform-managed keys"
    used = finding.key.key_id if finding.key else finding.via
    return Verdict.COMPLIANT, f"customer-managed key {used}"


def _key_age(finding: Finding, limits: Limits) -> Judgement:
    if finding.key is None:
        return Verdict.NOT_APPLICABLE, "no customer key"
    age = key_age_days(finding, limits.now)
    if age is None:
        return Verdict.NON_COMPLIANT, "the key version's creation time is not readable"
    if age > limits.max_key_age_days:
        return (
            Verdict.NON_COMPLIANT,
            f"key version is {age} days old (limit {limits.max_key_age_days})",
        )
    return Verdict.COMPLIANT, f"key version is {age} days old"


def _rotation_policy(finding: Finding, limits: Limits) -> Judgement:
    if finding.key is None:
        return Verdict.NOT_APPLICABLE, "no customer key"
    policy = finding.key.rotation_policy
    if policy is None or not policy.rotates:
        return Verdict.NON_COMPLIANT, "no rotation policy with a Rotate action"
    after = policy.rotate_after_days
    if after is not None and after > limits.max_key_age_days:
        return (
            Verdict.NON_COMPLIANT,
            f"the policy rotates after {after} days (limit {limits.max_key_age_days})",
        )
    return Verdict.COMPLIANT, "rotation policy rotates the key"


def _store_recoverable(finding: Finding, limits: Limits) -> Judgement:
    if finding.key is None:
        return Verdict.NOT_APPLICABLE, "no customer key"
    missing = [
        name
        for name, on in (
            ("soft delete", finding.key.store_soft_delete),
            ("purge protection", finding.key.store_purge_protection),
        )
        if not on
    ]
    if missing:
        return Verdict.NON_COMPLIANT, f"key vault without {' and '.join(missing)}"
    return Verdict.COMPLIANT, "key vault has soft delete and purge protection"


def _key_expiry(finding: Finding, limits: Limits) -> Judgement:
    if finding.key is None:
        return Verdict.NOT_APPLICABLE, "no customer key"
    if finding.key.expires is None:
        return Verdict.NON_COMPLIANT, "the key has no expiration date"
    left = (finding.key.expires - limits.now).days
    if left < limits.min_days_before_expiry:
        return (
            Verdict.NON_COMPLIANT,
            f"the key expires in {left} days (minimum {limits.min_days_before_expiry})",
        )
    return Verdict.COMPLIANT, f"the key expires in {left} days"


def _dek_current(finding: Finding, limits: Limits) -> Judgement:
    if finding.key is None:
        if finding.customer_key:
            return Verdict.NON_COMPLIANT, f"the root key is not recorded: {finding.note}"
        return Verdict.NOT_APPLICABLE, "not encrypted with a root key"
    if finding.key.version is None:
        return (
            Verdict.NON_COMPLIANT,
            f"{finding.key.key_id} is not a root key of account {finding.scope}",
        )
    if finding.key.enabled is False:
        return Verdict.NON_COMPLIANT, f"root key {finding.key.key_id} is disabled"
    if finding.wrapped_by_version is None:
        return Verdict.NON_COMPLIANT, "the version that wrapped the DEK is not recorded"
    if finding.wrapped_by_version != finding.key.version:
        return (
            Verdict.NON_COMPLIANT,
            f"DEK wrapped by version {finding.wrapped_by_version}, the root key's current "
            f"version is {finding.key.version}: rewrap it",
        )
    return Verdict.COMPLIANT, "DEK wrapped by the root key's current version"


_IBM_PROTECTED = frozenset(
    {Kind.IBM_IMAGE, Kind.IBM_IMAGE_TEMPLATE, Kind.IBM_VPC_IMAGE, Kind.IBM_REGISTERED}
)
_PROTECTED = (
    frozenset(
        {
            Kind.DISK,
            Kind.VIRTUAL_MACHINE,
            Kind.IMAGE_VERSION,
            Kind.REGISTRY,
            Kind.AKS_CLUSTER,
            Kind.STORAGE_CLASS,
        }
    )
    | _IBM_PROTECTED
)
_AZURE_KEYED = frozenset(
    {Kind.DISK_ENCRYPTION_SET, Kind.REGISTRY, Kind.AKS_CLUSTER, Kind.KEY_VAULT_KEY}
)

CONTROLS: tuple[Control, ...] = (
    Control(
        "customer-key",
        "Data at rest is encrypted with a customer-managed key",
        (
            "MCSB DP-5",
            "Azure Policy 702dd420-7fcc-42c5-afe8-4026edd20fe0 (disks)",
            "Azure Policy 5b9159ae-1701-4a6f-9a7a-aa9c8ddd0580 (registries)",
            "Azure Policy 7d7be79c-23ba-4033-84dd-45e2a5ccdd67 (AKS)",
            "CIS IBM Cloud 8.1.1",
        ),
        _PROTECTED,
        _customer_key,
    ),
    Control(
        "key-age",
        "The key version in use is younger than the limit",
        ("MCSB DP-6", "Azure Policy c26e4b24-cf98-4c67-b48b-5a25c4c69eb9"),
        _AZURE_KEYED | {Kind.IBM_ROOT_KEY},
        _key_age,
    ),
    Control(
        "rotation-policy",
        "The key has a rotation policy that rotates it within the limit",
        ("MCSB DP-6", "Azure Policy d8cf8476-a2ec-4916-896e-992351803c44"),
        _AZURE_KEYED,
        _rotation_policy,
    ),
    Control(
        "vault-recoverable",
        "The key's vault has soft delete and purge protection",
        (
            "MCSB DP-8",
            "CIS Azure 8.3.5",
            "Azure Policy 0b60c0b2-2dc2-4e1c-b5c9-abbed971de53",
            "Azure Policy 1e66c121-a66a-4b1f-9b83-0fd99bf0fc2d",
        ),
        _AZURE_KEYED,
        _store_recoverable,
    ),
    Control(
        "key-expiry",
        "The key has an expiration date far enough ahead",
        (
            "MCSB DP-6",
            "CIS Azure 8.3.1",
            "CIS Azure 8.3.2",
            "Azure Policy 152b15f7-8e1f-4c1f-ab71-8c010ba5dbc0",
            "Azure Policy 5ff38825-c5d8-47c5-b70e-069a21955146",
        ),
        _AZURE_KEYED,
        _key_expiry,
    ),
    Control(
        "ibm-dek-current",
        "The image's DEK is wrapped by the root key's current version",
        ("CIS IBM Cloud 8.1.1",),
        _IBM_PROTECTED,
        _dek_current,
    ),
)


ACCESS = "inventory-access"  # the row a finding the credentials cannot read gets instead


def evaluate(findings: Iterable[Finding], limits: Limits) -> list[EvidenceRow]:
    """One row per finding and control that applies to it; a finding the credentials cannot
    read (a subscription, a resource) is one `no-access` row, never an exception."""
    rows = []
    for finding in findings:
        if not finding.access:
            reason = finding.note or "the credentials cannot read it"
            rows.append(_row(finding, ACCESS, Verdict.NO_ACCESS, reason, limits))
            continue
        for control in CONTROLS:
            if finding.kind in control.applies_to:
                verdict, rule = control.judge(finding, limits)
                rows.append(_row(finding, control.id, verdict, rule, limits))
    return rows


def _row(
    finding: Finding, control: str, verdict: Verdict, rule: str, limits: Limits
) -> EvidenceRow:
    key = finding.key
    policy = key.rotation_policy if key else None
    return EvidenceRow(
        resource_id=finding.resource_id,
        kind=finding.kind,
        scope=finding.scope,
        region=finding.region,
        part=finding.part,
        encryption_type=finding.encryption_type,
        key_id=key.key_id if key else None,
        key_version=key.version if key else None,
        key_store=key.store_id if key else None,
        identity=finding.identity,
        key_created=key.created if key else None,
        key_enabled=key.enabled if key else None,
        key_expires=key.expires if key else None,
        key_age_days=key_age_days(finding, limits.now),
        rotation_policy=bool(policy and policy.rotates),
        rotate_after_days=policy.rotate_after_days if policy else None,
        notify_before_expiry_days=policy.notify_before_expiry_days if policy else None,
        last_rotation=key.last_rotation if key else None,
        control=control,
        verdict=verdict,
        rule=rule,
    )
