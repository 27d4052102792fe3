"""Steps A1-A3: register a preview feature, poll it until Registered, and register the
resource provider."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from prefect import get_run_logger, task

from blocks.azure import AzureCredentials
from byok.errors import ServiceRefused
from byok.polling import poll_until
from clients.azure import AzureClients
from tasks.retry import STEP_RETRIES

FEATURE_NOT_FOUND = "NotFound"


class FeatureApprovalRequired(ServiceRefused):
    """The feature is Pending: someone at Microsoft must approve it first."""


def _approval_required(namespace: str, feature: str):
    def make(state: str) -> Exception:
        return FeatureApprovalRequired(
            f"feature {namespace}/{feature}",
            f"{state}: it needs manual approval for this subscription. Ask for access "
            "(support request or the feature's sign-up page) and run the flow again once "
            "`az feature show` says Registered.",
        )

    return make


def _feature_state(clients: AzureClients, namespace: str, feature: str, register: bool) -> str:
    features = clients.features().features
    try:
        result = (
            features.register(namespace, feature) if register else features.get(namespace, feature)
        )
    except ResourceNotFoundError:
        return FEATURE_NOT_FOUND
    return str(result.properties.state if result.properties else "Unknown")


@task(name="Register feature", **STEP_RETRIES)
def register_feature(
    credentials: AzureCredentials, subscription_id: str | None, namespace: str, feature: str
) -> str:
    """Ask for the feature (a no-op when registered); returns its state, or 'NotFound'
    for a feature the subscription does not know (a preview that went GA)."""
    clients = AzureClients.of(credentials, subscription_id)
    state = _feature_state(clients, namespace, feature, register=False)
    if state not in ("Registered", "Registering", "Pending", FEATURE_NOT_FOUND):
        state = _feature_state(clients, namespace, feature, register=True)
    get_run_logger().info("Feature %s/%s is %s", namespace, feature, state)
    return state


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
    state = poll_until(
        lambda: _feature_state(clients, namespace, feature, register=False),
        frozenset({"Registered"}),
        stop={"Pending": _approval_required(namespace, feature)},
        timeout_seconds=timeout_seconds,
        interval_seconds=poll_seconds,
        what=f"Feature {namespace}/{feature}",
    )
    get_run_logger().info("Feature %s/%s is %s", namespace, feature, state)
    return state


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
