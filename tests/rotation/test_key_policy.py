"""Rotation policies: the service's rules before any call, the SDK shape, the comparison."""

from __future__ import annotations

import pytest
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy

from byok.errors import InvalidRequest
from byok.key_policy import RotationPolicySpec
from byok.parameters import parse_request


def test_policy_in_sdk_shape_and_compared_with_what_a_key_has() -> None:
    spec = RotationPolicySpec(rotate_after_days=90, expires_after_days=365)
    sdk = spec.to_sdk()
    assert sdk.expires_in == "P365D"
    actions = [(a.action, a.time_after_create, a.time_before_expiry) for a in sdk.lifetime_actions]
    assert actions == [("Rotate", "P90D", None), ("Notify", None, "P30D")]
    served = KeyRotationPolicy(
        expires_in="P365D",
        lifetime_actions=[
            KeyRotationLifetimeAction("Notify", time_before_expiry="P30D"),
            KeyRotationLifetimeAction("rotate", time_after_create="P90D"),
        ],
    )
    assert spec.matches(served)  # order and the action's case do not matter
    assert not RotationPolicySpec(rotate_after_days=60, expires_after_days=365).matches(served)
    vault_default = KeyRotationPolicy(
        lifetime_actions=[KeyRotationLifetimeAction("Notify", time_before_expiry="P30D")]
    )
    assert RotationPolicySpec().matches(vault_default)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expires_after_days": 27}, "expires_after_days = 27: must be at least 28 days"),
        ({"rotate_after_days": 6}, "rotate_after_days = 6: must be at least 7 days"),
        ({"rotate_before_expiry_days": 30}, "rotate_before_expiry_days = 30: needs expires_"),
        (
            {"rotate_after_days": 400, "expires_after_days": 365},
            "rotate_after_days = 400: must be shorter than expires_after_days",
        ),
        (
            {"rotate_after_days": 30, "rotate_before_expiry_days": 30, "expires_after_days": 90},
            "rotate_before_expiry_days = 30: give either",
        ),
        ({"notify_before_expiry_days": 3}, "notify_before_expiry_days = 3: must be at least 7"),
    ],
)
def test_rules_refused_with_the_field(fields: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_request(RotationPolicySpec, fields)
