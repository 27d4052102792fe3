"""Steps A1-A3: register a preview feature, poll it until Registered, and register the
resource provider; and a feature another flow's option needs (encryption at host)."""

from __future__ import annotations

from functools import partial

from azure.core.exceptions import ResourceNotFoundError
from prefect import task

from blocks.azure import AzureCredentials
from byok.errors import InvalidRequest
from byok.polling import poll_until
from byok.registration_models import (
    FEATURE_NOT_FOUND,
    approval_required,
    feature_id,
    not_available,
    provider_id,
)
from byok.registration_models import (  # its import path before the move
    FeatureApprovalRequired as FeatureApprovalRequired,
)
from clients.azure import AzureClients
from tasks.outcomes import report
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
    asked = state not in _NO_REGISTRATION
    if asked:
        state = _feature_state(clients, namespace, feature, register=True)
    resource = feature_id(clients.subscription_id, namespace, feature)
    report(resource, "register" if asked else None, note=_said(state))
    return state


_NO_REGISTRATION = frozenset({"Registered", "Registering", "Pending", FEATURE_NOT_FOUND})
"""The feature states where registering would ask for nothing new."""


def _provider_verb(state: str) -> str | None:
    """What the provider step does to a provider in `state`."""
    return {"Registered": None, "Registering": "wait for"}.get(state, "register")


def _said(state: str) -> str:
    return "unknown (GA): skipped" if state == FEATURE_NOT_FOUND else state


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
    report(feature_id(clients.subscription_id, namespace, feature), "wait for", note=state)
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
    state = _register(clients, namespace, feature)
    if state == FEATURE_NOT_FOUND:
        raise _not_offered(field, namespace, feature)
    if state == "Registered":
        return state
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
    clients = AzureClients.of(credentials, subscription_id)
    providers = clients.resources().providers
    state = providers.get(namespace).registration_state
    verb = _provider_verb(str(state))
    if verb == "register":
        providers.register(namespace)
    if verb is not None:
        state = poll_until(
            lambda: str(providers.get(namespace).registration_state),
            frozenset({"Registered"}),
            timeout_seconds=timeout_seconds,
            interval_seconds=poll_seconds,
            what=f"Resource provider {namespace}",
        )
    report(provider_id(clients.subscription_id, namespace), verb, note=str(state))
    return str(state)


@task(name="Plan the feature registration", **STEP_RETRIES)
def plan_feature_registration(
    credentials: AzureCredentials,
    subscription_id: str | None,
    namespace: str,
    feature: str,
    optional: bool,
) -> None:
    """What each step of ensure-feature-registration would do, from reads only (a required
    feature the subscription does not know is refused, as the run would)."""
    clients = AzureClients.of(credentials, subscription_id)
    state = _plan_feature(
        clients, namespace, feature, "Register feature", "Wait for feature registration"
    )
    if state == FEATURE_NOT_FOUND and not optional:
        raise not_available(namespace, feature, clients.subscription_id)
    provider = clients.resources().providers.get(namespace).registration_state
    report(
        provider_id(clients.subscription_id, namespace),
        _provider_verb(str(provider)),
        step="Register resource provider",
        note=str(provider),
        planned=True,
    )


@task(name="Plan the feature the request needs", **STEP_RETRIES)
def plan_required_feature(
    credentials: AzureCredentials,
    subscription_id: str | None,
    namespace: str,
    feature: str,
    field: str,
) -> None:
    """What `require_feature` would do, from the feature's state (a feature the subscription
    does not offer refuses the option, as the run would)."""
    clients = AzureClients.of(credentials, subscription_id)
    step = "Register the feature the request needs"
    if _plan_feature(clients, namespace, feature, step, step) == FEATURE_NOT_FOUND:
        raise _not_offered(field, namespace, feature)


def _plan_feature(
    clients: AzureClients, namespace: str, feature: str, register_step: str, wait_step: str
) -> str:
    """Report what registering the feature and waiting for it would do; returns its state."""
    state = _feature_state(clients, namespace, feature, register=False)
    resource = feature_id(clients.subscription_id, namespace, feature)
    verb = None if state in _NO_REGISTRATION else "register"
    report(resource, verb, step=register_step, note=_said(state), planned=True)
    if state not in ("Registered", FEATURE_NOT_FOUND):
        report(resource, "wait for", step=wait_step, planned=True)
    return state


def _not_offered(field: str, namespace: str, feature: str) -> InvalidRequest:
    return InvalidRequest(
        field, True, f"the subscription does not offer the {namespace}/{feature} feature"
    )
