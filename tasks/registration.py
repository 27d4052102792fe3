"""Steps A1-A3: register a preview feature, poll it until Registered, and register the
resource provider; and a feature another flow's option needs (encryption at host)."""

from __future__ import annotations

from functools import partial

from azure.core.exceptions import ResourceNotFoundError
from prefect import get_run_logger, task

from blocks.azure import AzureCredentials
from byok.errors import InvalidRequest
from byok.polling import poll_until
from byok.registration_models import FEATURE_NOT_FOUND, approval_required
from byok.registration_models import (  # its import path before the move
    FeatureApprovalRequired as FeatureApprovalRequired,
)
from clients.azure import AzureClients
from tasks.retry import STEP_RETRIES


def _feature_state(clients: AzureClients, namespace: str, feature: str, register: bool) -> str:
    features = clients.features().features
    try:
        result = (
            features.register(namespace, feature) if register else features.get(namespace, feature)
        )
    except ResourceNotFoundError:
        return FEATURE_NOT_FOUND
    return str(result.properties.state if result.properties else "Unknown")


def _register(clients: AzureClients, namespace: str, feature: str) -> str:
    """Ask for the feature unless it is registered or on its way; returns its state."""
    state = _feature_state(clients, namespace, feature, register=False)
    if state not in ("Registered", "Registering", "Pending", FEATURE_NOT_FOUND):
        state = _feature_state(clients, namespace, feature, register=True)
    get_run_logger().info("Feature %s/%s is %s", namespace, feature, state)
    return state


def _wait(
    clients: AzureClients,
    namespace: str,
    feature: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> str:
    """Poll until Registered; Pending stops with FeatureApprovalRequired."""
    state = poll_until(
        lambda: _feature_state(clients, namespace, feature, register=False),
        frozenset({"Registered"}),
        stop={"Pending": partial(approval_required, namespace, feature)},
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Feature {namespace}/{feature}",
    )
    get_run_logger().info("Feature %s/%s is %s", namespace, feature, state)
    return state


@task(name="Register feature", **STEP_RETRIES)
def register_feature(
    credentials: AzureCredentials, subscription_id: str | None, namespace: str, feature: str
) -> str:
    """Ask for the feature (a no-op when registered); returns its state, or 'NotFound'
    for a feature the subscription does not know (a preview that went GA)."""
    return _register(AzureClients.of(credentials, subscription_id), namespace, feature)


@task(name="Wait for feature registration", **STEP_RETRIES)
def wait_for_feature(
    credentials: AzureCredentials,
    subscription_id: str | None,
    namespace: str,
    feature: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> str:
    """Poll the feature until Registered; Pending stops with FeatureApprovalRequired."""
    clients = AzureClients.of(credentials, subscription_id)
    return _wait(clients, namespace, feature, timeout_seconds, poll_seconds)


@task(name="Register the feature the request needs", **STEP_RETRIES)
def require_feature(
    credentials: AzureCredentials,
    subscription_id: str | None,
    namespace: str,
    feature: str,
    field: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> str:
    """Register the feature an option (`field`) needs and wait until Registered; a feature
    the subscription does not offer refuses the option (InvalidRequest)."""
    clients = AzureClients.of(credentials, subscription_id)
    if _register(clients, namespace, feature) == FEATURE_NOT_FOUND:
        raise InvalidRequest(
            field, True, f"the subscription does not offer the {namespace}/{feature} feature"
        )
    return _wait(clients, namespace, feature, timeout_seconds, poll_seconds)


@task(name="Register resource provider", **STEP_RETRIES)
def ensure_provider_registered(
    credentials: AzureCredentials,
    subscription_id: str | None,
    namespace: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> str:
    """Check the provider; register it and poll until Registered when it is not."""
    providers = AzureClients.of(credentials, subscription_id).resources().providers
    state = providers.get(namespace).registration_state
    if state != "Registered":
        if state != "Registering":
            providers.register(namespace)
        state = poll_until(
            lambda: str(providers.get(namespace).registration_state),
            frozenset({"Registered"}),
            timeout_seconds=timeout_seconds,
            interval_seconds=poll_seconds,
            what=f"Resource provider {namespace}",
        )
    get_run_logger().info("Resource provider %s is %s", namespace, state)
    return str(state)
