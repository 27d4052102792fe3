"""Procedure A, steps 1-3: make sure a subscription may use a feature and its provider."""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from blocks.azure import AzureCredentials
from byok.errors import ServiceRefused
from byok.parameters import parse_request
from tasks.refusal import refuse_quietly
from tasks.registration import (
    FEATURE_NOT_FOUND,
    ensure_provider_registered,
    register_feature,
    wait_for_feature,
)
from tasks.subscription import check_subscription_regions


class FeatureRegistrationRequest(BaseModel):
    """Which feature to ensure, and how long to wait for it."""

    azure_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK Azure Credentials' block to use."
    )
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


class FeatureRegistrationResult(BaseModel):
    """The states reached."""

    namespace: str
    feature: str
    feature_state: str = Field(description="Registered, or NotFound when skipped.")
    provider_state: str
    skipped: bool = Field(description="True when the feature was unknown and optional.")


class FeatureNotAvailable(ServiceRefused):
    """A required feature is unknown to the subscription."""


@flow(name="ensure-feature-registration", log_prints=False, validate_parameters=False)
@refuse_quietly
def ensure_feature_registration(
    request: FeatureRegistrationRequest,
) -> FeatureRegistrationResult:
    """Check the subscription → register the feature, wait until it is Registered (Pending
    stops with a clear "needs approval" error), then register the resource provider if
    needed."""
    request = parse_request(FeatureRegistrationRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    sub = request.subscription_id or credentials.subscription_id
    ns, name = request.namespace, request.feature
    timeout, poll = request.timeout_minutes * 60, request.poll_seconds
    check_subscription_regions(credentials, sub, {})
    state = register_feature(credentials, sub, ns, name)
    skipped = state == FEATURE_NOT_FOUND
    if skipped and not request.optional:
        raise FeatureNotAvailable(
            f"feature {ns}/{name}",
            f"unknown to subscription {sub}; it is required (optional=false)",
        )
    if skipped:
        get_run_logger().info("Feature %s/%s is unknown (GA): skipping it", ns, name)
    else:
        state = wait_for_feature(credentials, sub, ns, name, timeout, poll)
    provider_state = ensure_provider_registered(credentials, sub, ns, timeout, poll)
    return FeatureRegistrationResult(
        namespace=ns,
        feature=name,
        feature_state=state,
        provider_state=provider_state,
        skipped=skipped,
    )
