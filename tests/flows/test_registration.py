"""The feature-registration flow against the emulator: Registered, Pending, unknown, and the
resource provider."""

from __future__ import annotations

import pytest

from emulator.faults import Fault
from emulator.server import Emulator
from flows.registration import (
    FeatureNotAvailable,
    FeatureRegistrationRequest,
    ensure_feature_registration,
)
from tasks.registration import FeatureApprovalRequired


def request(block: str, **overrides: object) -> FeatureRegistrationRequest:
    values: dict[str, object] = {
        "azure_credentials_block": block,
        "feature": "SIGEncryption",
        "poll_seconds": 0.01,
        "timeout_minutes": 0.5,
    }
    values.update(overrides)
    return FeatureRegistrationRequest(**values)  # type: ignore[arg-type]


def test_feature_ends_registered_and_provider_too(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", polls=3)
    emulator.arm.configure_provider("Microsoft.Compute", "NotRegistered", polls=2)
    result = ensure_feature_registration(request(azure_block))
    assert (result.feature_state, result.provider_state, result.skipped) == (
        "Registered",
        "Registered",
        False,
    )
    assert emulator.arm.feature("Microsoft.Compute", "SIGEncryption").state == "Registered"
    assert emulator.arm.provider("Microsoft.Compute").state == "Registered"
    assert len(emulator.requests.find("POST", r"features/SIGEncryption/register$")) == 1
    assert len(emulator.requests.find("POST", r"providers/Microsoft.Compute/register$")) == 1


def test_rerun_on_registered_feature_writes_nothing(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", state="Registered")
    result = ensure_feature_registration(request(azure_block))
    assert result.feature_state == "Registered"
    assert not emulator.requests.find("POST", r"^/subscriptions/")


def test_pending_feature_stops_with_needs_approval(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", behaviour="pending")
    with pytest.raises(FeatureApprovalRequired, match="needs manual approval"):
        ensure_feature_registration(request(azure_block))
    assert not emulator.requests.find("POST", r"providers/Microsoft.Compute/register$")


def test_unknown_optional_feature_is_skipped(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", behaviour="unknown")
    result = ensure_feature_registration(request(azure_block))
    assert (result.feature_state, result.skipped, result.provider_state) == (
        "NotFound",
        True,
        "Registered",
    )


def test_unknown_required_feature_fails(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", behaviour="unknown")
    with pytest.raises(FeatureNotAvailable, match="required"):
        ensure_feature_registration(request(azure_block, optional=False))


def test_registration_that_never_finishes_times_out(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", polls=10**6)
    with pytest.raises(TimeoutError, match="still 'Registering'"):
        ensure_feature_registration(request(azure_block, timeout_minutes=0.01))


def test_throttled_registration_is_retried(azure_block: str, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption")
    emulator.faults.add(
        Fault("status", path="features/SIGEncryption", status=429, retry_after=0, count=3)
    )
    assert ensure_feature_registration(request(azure_block)).feature_state == "Registered"
    assert [r.status for r in emulator.requests.find(path="SIGEncryption")][:3] == [429] * 3
