"""Procedure A, steps 1-3: make sure a subscription may use a feature and its provider.

ensure-feature-registration: check the subscription → register the feature (an unknown one
is skipped when optional, refused otherwise) → wait until it is Registered (Pending stops
with "needs approval") → register the resource provider if needed."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.registration_models import (
    FEATURE_NOT_FOUND,
    FeatureApprovalRequired,
    FeatureNotAvailable,
    FeatureRegistrationRequest,
    FeatureRegistrationResult,
    not_available,
)
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.registration import (
    ensure_provider_registered,
    plan_feature_registration,
    register_feature,
    wait_for_feature,
)
from tasks.subscription import check_subscription_regions

__all__ = [  # the request, result and refusals, importable from the flow that takes them
    "FeatureApprovalRequired",
    "FeatureNotAvailable",
    "FeatureRegistrationRequest",
    "FeatureRegistrationResult",
    "ensure_feature_registration",
]


@flow(name="ensure-feature-registration", log_prints=False, validate_parameters=False)
@refuse_quietly
def ensure_feature_registration(
    request: FeatureRegistrationRequest, credentials: AzureCredentials | None = None
) -> FeatureRegistrationResult | Plan:
    """Check the subscription → register the feature, wait until it is Registered (Pending
    stops with a clear "needs approval" error), then register the resource provider if
    needed. `plan_only`: what each step would do, from the feature's and provider's states.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(FeatureRegistrationRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub = request.subscription_id or credentials.subscription_id
    ns, name = request.namespace, request.feature
    timeout, poll = request.timeout_minutes * 60, request.poll_seconds
    check_subscription_regions(credentials, sub, {})
    if request.plan_only:
        plan_feature_registration(credentials, sub, ns, name, request.optional)
        return publish_plan("ensure-feature-registration")
    state = register_feature(credentials, sub, ns, name)
    skipped = state == FEATURE_NOT_FOUND
    if skipped and not request.optional:
        raise not_available(ns, name, sub)
    if state not in ("Registered", FEATURE_NOT_FOUND):
        state = wait_for_feature(credentials, sub, ns, name, timeout, poll)
    provider_state = ensure_provider_registered(credentials, sub, ns, timeout, poll)
    summarize("ensure-feature-registration")
    return FeatureRegistrationResult(
        namespace=ns,
        feature=name,
        feature_state=state,
        provider_state=provider_state,
        skipped=skipped,
    )
