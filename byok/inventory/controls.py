"""The controls the inventory judges, each with the public control ids it evidences.

Azure Policy ids are the built-in definitions' names (Microsoft Learn, "Azure Policy built-in
definitions for Key Vault" and the per-service CMK definitions); CIS numbers follow the CIS
Microsoft Azure Foundations Benchmark v5.0.0 (section 8.3, Key Vault); MCSB is the Microsoft
cloud security benchmark v1 (data protection: DP-5 customer-managed keys, DP-6 key
management, DP-8 key repository security). The KMS and encryption-at-host definitions are in
github.com/Azure/azure-policy, built-in-policies/policyDefinitions/Kubernetes/AKS_EnableKMS.json
and AKS_EncryptionAtHost_Deny.json, and the Compute definition "Virtual machines and virtual
machine scale sets should have encryption at host enabled"."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from byok.inventory.models import EvidenceRow, Finding, KeyState, Kind, Verdict

Judgement = tuple[Verdict, str]


@dataclass(frozen=True)
class Limits:
    """The thresholds a run judges by, and its clock."""

    now: datetime
    max_key_age_days: int = 90
    min_days_before_expiry: int = 30


@dataclass(frozen=True)
class Control:
    """A rule, the kinds and parts it applies to, and the public control ids it evidences."""

    id: str
    title: str
    references: tuple[str, ...]
    applies_to: frozenset[Kind]
    judge: Callable[[Finding, Limits], Judgement]
    parts: frozenset[str] | None = None  # only these parts (None: every part)
    skip_parts: frozenset[str] = frozenset()

    def applies(self, finding: Finding) -> bool:
        """Whether the control judges this finding."""
        return (
            finding.kind in self.applies_to
            and (self.parts is None or finding.part in self.parts)
            and finding.part not in self.skip_parts
        )


KMS_PART, HOST_PART = "kms-etcd", "host"


def key_age_days(finding: Finding, now: datetime) -> int | None:
    """Whole days since the key version in use was created."""
    if finding.key is None or finding.key.created is None:
        return None
    return (now - finding.key.created).days


def _customer_key(finding: Finding, limits: Limits) -> Judgement:
    # A StorageClass's note names the cluster's default class: its disks are the usual ones.
    noted = f" ({finding.note})" if finding.kind is Kind.STORAGE_CLASS and finding.note else ""
    if not finding.customer_key:
        if finding.kind is Kind.STORAGE_CLASS:
            return Verdict.NON_COMPLIANT, f"no diskEncryptionSetID: platform-managed keys{noted}"
        return Verdict.NON_COMPLIANT, "encrypted with platform-managed keys"
    used = finding.key.key_id if finding.key else finding.via
    return Verdict.COMPLIANT, f"customer-managed key {used}{noted}"


def _unreadable(key: KeyState) -> Judgement:
    where = f" (its store is in tenant {key.tenant_id})" if key.tenant_id else ""
    return Verdict.NO_ACCESS, f"these credentials cannot read the key{where}"


_NO_KEY: Judgement = (Verdict.NOT_APPLICABLE, "no customer key")


def _key_age(finding: Finding, limits: Limits) -> Judgement:
    if finding.key is None:
        return _NO_KEY
    if not finding.key.readable:
        return _unreadable(finding.key)
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
        return _NO_KEY
    if not finding.key.readable:
        return _unreadable(finding.key)
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
    key = finding.key
    if key is None:
        return _NO_KEY
    if key.store_id is None and not key.readable:
        return _unreadable(key)
    store = "managed HSM" if key.store_kind == "managed-hsm" else "key vault"
    missing = [
        name
        for name, on in (
            ("soft delete", key.store_soft_delete),
            ("purge protection", key.store_purge_protection),
        )
        if not on
    ]
    if missing:
        return Verdict.NON_COMPLIANT, f"{store} without {' and '.join(missing)}"
    return Verdict.COMPLIANT, f"{store} has soft delete and purge protection"


def _key_expiry(finding: Finding, limits: Limits) -> Judgement:
    key = finding.key
    if key is None:
        return _NO_KEY
    if not key.readable:
        return _unreadable(key)
    if key.expires is None:
        return Verdict.NON_COMPLIANT, "the key has no expiration date"
    left = (key.expires - limits.now).days
    if left < limits.min_days_before_expiry:
        return (
            Verdict.NON_COMPLIANT,
            f"the key expires in {left} days (minimum {limits.min_days_before_expiry})",
        )
    return Verdict.COMPLIANT, f"the key expires in {left} days"


def _kms_etcd(finding: Finding, limits: Limits) -> Judgement:
    if not finding.customer_key:
        return (
            Verdict.NON_COMPLIANT,
            "KMS etcd encryption is off: Secrets are sealed with keys AKS manages",
        )
    if finding.rotation and "cluster Failed" in finding.rotation:
        return Verdict.NON_COMPLIANT, f"the cluster cannot use its KMS key: {finding.rotation}"
    version = finding.key.version if finding.key else None
    rule = f"Secrets in etcd sealed with customer key version {version}"
    if finding.previous_key_version:
        rule += (
            f"; the previous version {finding.previous_key_version} stays in the second slot "
            "until rotate-aks-kms-key re-wrote every Secret"
        )
    return Verdict.COMPLIANT, rule


def _encryption_at_host(finding: Finding, limits: Limits) -> Judgement:
    if finding.encryption_at_host:
        return Verdict.COMPLIANT, "temp disks and caches are encrypted at host"
    return (
        Verdict.NON_COMPLIANT,
        "encryption at host is off: temp disks and caches are not encrypted",
    )


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
        skip_parts=frozenset({KMS_PART, HOST_PART}),  # their own controls judge them
    ),
    Control(
        "kms-etcd",
        "Kubernetes Secrets in etcd are encrypted with a customer key (KMS)",
        ("MCSB DP-5", "Azure Policy dbbdc317-9734-4dd8-9074-993b29c69008"),
        frozenset({Kind.AKS_CLUSTER}),
        _kms_etcd,
        parts=frozenset({KMS_PART}),
    ),
    Control(
        "encryption-at-host",
        "Temp disks and disk caches of VMs and node pools are encrypted at host",
        (
            "Azure Policy fc4d8e41-e223-45ea-9bf5-eada37891d87 (VMs)",
            "Azure Policy 41425d9f-d1a5-499a-9932-f8ed8453932c (AKS node pools)",
        ),
        frozenset({Kind.VIRTUAL_MACHINE, Kind.AKS_NODE_POOL}),
        _encryption_at_host,
        parts=frozenset({HOST_PART, ""}),
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
        (
            "MCSB DP-6",
            "Azure Policy d8cf8476-a2ec-4916-896e-992351803c44",
            "CIS IBM Cloud 8.1.1",
        ),
        _AZURE_KEYED | {Kind.IBM_ROOT_KEY},
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
        _AZURE_KEYED | {Kind.IBM_ROOT_KEY},
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
            if control.applies(finding):
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
        key_store_kind=key.store_kind if key else None,
        key_tenant=key.tenant_id if key else None,
        federated_client_id=finding.federated_client_id,
        previous_key_version=finding.previous_key_version,
        rotation=finding.rotation,
        encryption_at_host=finding.encryption_at_host,
        security_type=finding.security_type,
        blocks_rotation=" ".join(finding.blocks_rotation) or None,
        control=control,
        verdict=verdict,
        rule=rule,
    )
