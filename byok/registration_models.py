"""Feature registration requests, results and errors (no Prefect import): which preview
feature a subscription must have, the states reached, and the refusals of a feature that is
unknown or waits for approval."""

from __future__ import annotations

from pydantic import BaseModel, Field

from byok.errors import ServiceRefused
from byok.outcomes import PLAN_ONLY
from byok.parameters import AZURE_BLOCK_NAME

FEATURE_NOT_FOUND = "NotFound"  # the state of a feature the subscription does not know


def feature_id(subscription: str, namespace: str, feature: str) -> str:
    """The feature's ARM id (`az feature show`'s `id`)."""
    return (
        f"/subscriptions/{subscription}/providers/Microsoft.Features/providers/{namespace}"
        f"/features/{feature}"
    )


def provider_id(subscription: str, namespace: str) -> str:
    """The resource provider's ARM id."""
    return f"/subscriptions/{subscription}/providers/{namespace}"


class FeatureRegistrationRequest(BaseModel):
    """Which feature to ensure, and how long to wait for it."""

    azure_credentials_block: str | None = Field(None, description=AZURE_BLOCK_NAME)
    subscription_id: str | None = Field(
        None, description="Subscription to register in; default: the block's."
    )
    namespace: str = Field(
        "Microsoft.Compute",
        pattern=r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)+$",
        description="Resource provider namespace of the feature.",
    )
    feature: str = Field(
        "SIGEncryption", min_length=1, description="Feature name (az feature show --name)."
    )
    optional: bool = Field(
        True,
        description="An unknown feature means it went GA: continue without it.",
    )
    timeout_minutes: float = Field(
        60, gt=0, description="How long to wait for Registered (users report 30+ min)."
    )
    poll_seconds: float = Field(30, gt=0, description="Seconds between state checks.")
    plan_only: bool = PLAN_ONLY


class FeatureRegistrationResult(BaseModel):
    """The states reached."""

    namespace: str
    feature: str
    feature_state: str = Field(description="Registered, or NotFound when skipped.")
    provider_state: str
    skipped: bool = Field(description="True when the feature was unknown and optional.")


class FeatureNotAvailable(ServiceRefused):
    """A required feature is unknown to the subscription."""


class FeatureApprovalRequired(ServiceRefused):
    """The feature is Pending: someone at Microsoft must approve it first."""


def not_available(namespace: str, feature: str, subscription: str) -> FeatureNotAvailable:
    """The refusal of a required feature the subscription does not know."""
    return FeatureNotAvailable(
        f"feature {namespace}/{feature}",
        f"unknown to subscription {subscription}; it is required (optional=false)",
    )


def approval_required(namespace: str, feature: str, state: str) -> FeatureApprovalRequired:
    """The refusal of a feature left `state` (Pending) until someone approves it."""
    return FeatureApprovalRequired(
        f"feature {namespace}/{feature}",
        f"{state}: it needs manual approval for this subscription. Ask for access "
        "(support request or the feature's sign-up page) and run the flow again once "
        "`az feature show` says Registered.",
    )
