"""The registry from the doc's ARM template (identity, access policy, registry): the template
and its deployment."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.deployments.models import (
    Deployment,
    DeploymentParameter,
    DeploymentProperties,
)
from prefect import task

from blocks.azure import AzureCredentials
from byok.acr_models import deployment_id
from byok.key_store import KeyStore
from byok.retrying import retry_while
from clients.azure import AzureClients
from clients.key_store_access import log_retry
from clients.registries import template_applied
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES

TEMPLATE = files("byok") / "templates" / "acr_cmk.json"  # package data, found in a wheel too


def load_template() -> dict[str, Any]:
    """The ARM template of the doc (identity, access policy, registry)."""
    return json.loads(TEMPLATE.read_text())


@task(name="Deploy the template", **STEP_RETRIES)
def deploy_template(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    deployment_name: str,
    parameters: dict[str, str],
    store: KeyStore,
    timeout_seconds: float,
) -> None:
    """`az deployment group create --template-file CMKtemplate.json --parameters …`
    (Incremental, so a re-run converges; not sent when what it makes is there already: see
    `template_applied`); a registry refused while the template's access policy propagates is
    redeployed with bounded backoff."""
    clients = AzureClients.of(credentials, subscription_id)
    target = deployment_id(clients.subscription_id, resource_group, deployment_name)
    if template_applied(clients, resource_group, parameters, store):
        report(target, None, note="its identity, access policy and registry are in place")
        return
    deployments = clients.deployments().deployments
    body = Deployment(
        properties=DeploymentProperties(
            template=load_template(),
            parameters={k: DeploymentParameter(value=v) for k, v in parameters.items()},
            mode="Incremental",
        )
    )
    result = retry_while(
        lambda: deployments.begin_create_or_update(resource_group, deployment_name, body).result(),
        lambda exc: isinstance(exc, HttpResponseError) and "KeyVaultAccessForbidden" in str(exc),
        timeout_seconds=timeout_seconds,
        first_delay=2,
        on_retry=log_retry(f"deployment {deployment_name}"),
    )
    deployed = len(result.properties.output_resources or [])
    report(target, "deploy", note=f"{deployed} resources")
