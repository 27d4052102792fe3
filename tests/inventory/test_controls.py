"""The controls judge findings as their rules say, and name the rule in each row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from byok.inventory.controls import CONTROLS, Limits, evaluate
from byok.inventory.models import Finding, KeyState, Kind, RotationPolicy, Verdict

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SUB = "00000000-0000-0000-0000-000000000001"
DES = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets/d"


def key(**overrides: object) -> KeyState:
    values: dict[str, object] = {
        "key_id": "https://kv.vault.azure.net/keys/k/v1",
        "version": "v1",
        "created": NOW - timedelta(days=10),
        "enabled": True,
        "expires": NOW + timedelta(days=365),
        "rotation_policy": RotationPolicy(rotate_after_days=60),
        "store_id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
        "store_soft_delete": True,
        "store_purge_protection": True,
    }
    return KeyState(**{**values, **overrides})  # type: ignore[arg-type]


def verdicts(finding: Finding, **limits: int) -> dict[str, tuple[Verdict, str]]:
    return {r.control: (r.verdict, r.rule) for r in evaluate([finding], Limits(now=NOW, **limits))}


def test_a_well_kept_set_is_compliant_on_every_key_control() -> None:
    found = verdicts(Finding(resource_id=DES, kind=Kind.DISK_ENCRYPTION_SET, scope=SUB, key=key()))
    assert set(found) == {"key-age", "rotation-policy", "vault-recoverable", "key-expiry"}
    assert {v for v, _ in found.values()} == {Verdict.COMPLIANT}


@pytest.mark.parametrize(
    ("overrides", "control", "rule"),
    [
        ({"created": NOW - timedelta(days=91)}, "key-age", "91 days old (limit 90)"),
        ({"created": None}, "key-age", "creation time is not readable"),
        ({"rotation_policy": None}, "rotation-policy", "no rotation policy"),
        (
            {"rotation_policy": RotationPolicy(notify_before_expiry_days=30)},
            "rotation-policy",
            "no rotation policy with a Rotate action",
        ),
        (
            {"rotation_policy": RotationPolicy(rotate_after_days=365)},
            "rotation-policy",
            "rotates after 365 days (limit 90)",
        ),
        ({"store_purge_protection": False}, "vault-recoverable", "without purge protection"),
        ({"expires": None}, "key-expiry", "no expiration date"),
        ({"expires": NOW + timedelta(days=5)}, "key-expiry", "expires in 5 days (minimum 30)"),
    ],
)
def test_each_broken_rule_is_named(overrides: dict, control: str, rule: str) -> None:
    finding = Finding(
        resource_id=DES, kind=Kind.DISK_ENCRYPTION_SET, scope=SUB, key=key(**overrides)
    )
    verdict, text = verdicts(finding)[control]
    assert verdict == Verdict.NON_COMPLIANT
    assert rule in text


def test_platform_keys_fail_the_customer_key_control_only() -> None:
    disk = Finding(resource_id=f"/subscriptions/{SUB}/x/disks/d1", kind=Kind.DISK, scope=SUB)
    assert verdicts(disk) == {
        "customer-key": (Verdict.NON_COMPLIANT, "encrypted with platform-managed keys")
    }


def test_unreadable_subscriptions_are_one_row_not_an_error() -> None:
    hidden = Finding(
        resource_id=f"/subscriptions/{SUB}",
        kind=Kind.SUBSCRIPTION,
        scope=SUB,
        access=False,
        note="SubscriptionNotFound: no such subscription",
    )
    assert verdicts(hidden) == {
        "inventory-access": (Verdict.NO_ACCESS, "SubscriptionNotFound: no such subscription")
    }


def test_ibm_dek_must_be_wrapped_by_the_current_root_key_version() -> None:
    image = Finding(
        resource_id="cos://us-south/bucket/image.vhd",
        kind=Kind.IBM_IMAGE,
        scope="acct",
        customer_key=True,
        key=key(key_id="kp-root", version="3"),
        wrapped_by_version="2",
    )
    verdict, rule = verdicts(image)["ibm-dek-current"]
    assert verdict == Verdict.NON_COMPLIANT and "version 2" in rule and "rewrap" in rule
    image.wrapped_by_version = "3"
    assert verdicts(image)["ibm-dek-current"][0] == Verdict.COMPLIANT


def test_the_age_limit_is_a_parameter() -> None:
    old = Finding(
        resource_id=DES,
        kind=Kind.DISK_ENCRYPTION_SET,
        scope=SUB,
        key=key(created=NOW - timedelta(days=100)),
    )
    assert verdicts(old)["key-age"][0] == Verdict.NON_COMPLIANT
    assert verdicts(old, max_key_age_days=120)["key-age"][0] == Verdict.COMPLIANT


def test_every_control_names_public_control_ids() -> None:
    for control in CONTROLS:
        assert control.references, control.id
        assert all(ref.split()[0] in {"MCSB", "CIS", "Azure"} for ref in control.references)


@pytest.mark.parametrize(
    ("finding", "verdict", "rule"),
    [
        ({"key": key(key_id="kp-root", version="3", enabled=False)}, "non-compliant", "disabled"),
        ({"key": KeyState(key_id="crn-elsewhere")}, "non-compliant", "not a root key of account"),
        ({"key": None, "note": "no object img.vhd"}, "non-compliant", "no object img.vhd"),
        ({"key": None, "customer_key": False}, "not-applicable", "not encrypted"),
    ],
)
def test_ibm_dek_control_without_a_usable_root_key(
    finding: dict[str, object], verdict: str, rule: str
) -> None:
    values: dict[str, object] = {"customer_key": True, "wrapped_by_version": "3", **finding}
    template = Finding(
        resource_id="softlayer:image-template:1", kind=Kind.IBM_IMAGE_TEMPLATE, scope="acct",
        **values,  # type: ignore[arg-type]
    )  # fmt: skip
    found, text = verdicts(template)["ibm-dek-current"]
    assert found == verdict and rule in text


def test_key_protect_root_keys_are_judged_on_their_expiry() -> None:
    def root(expires: datetime | None) -> Finding:
        return Finding(
            resource_id="crn:v1:bluemix:public:kms:us-south:a/acct:i:key:k1",
            kind=Kind.IBM_ROOT_KEY,
            scope="acct",
            key=key(key_id="crn:k1", version="3", expires=expires),
        )

    assert verdicts(root(None))["key-expiry"] == (
        Verdict.NON_COMPLIANT,
        "the key has no expiration date",
    )
    assert verdicts(root(NOW + timedelta(days=10)))["key-expiry"][0] == Verdict.NON_COMPLIANT
    assert verdicts(root(NOW + timedelta(days=400)))["key-expiry"] == (
        Verdict.COMPLIANT,
        "the key expires in 400 days",
    )
