"""Inventory step: each AKS cluster's StorageClasses, read through its Kubernetes API with
the cluster's user credentials (`listClusterUserCredential`), as the AKS flow applies them."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.mgmt.core.tools import parse_resource_id
from prefect import get_run_logger, task
from urllib3.exceptions import HTTPError as ConnectionProblem

from blocks.azure import AzureCredentials
from byok.azure_errors import error_code
from byok.inventory.said import classes_note
from byok.inventory.storage_classes import Classes
from clients.azure import AzureClients
from clients.kubernetes import storage_api
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES

AKS_TYPE = "microsoft.containerservice/managedclusters"
_REFUSED = (401, 403, 404)  # credentials refused, or the cluster gone meanwhile


@task(name="Read the StorageClasses", **STEP_RETRIES, **IN_MEMORY)
def read_storage_classes(
    credentials: AzureCredentials, rows: list[dict[str, Any]]
) -> dict[str, Classes]:
    """Per AKS cluster (lower-cased id): its StorageClasses, or why they could not be read
    (user credentials refused, API server refusing them or not reachable)."""
    classes = {
        row["id"].lower(): _classes(credentials, row["id"])
        for row in rows
        if row["type"].lower() == AKS_TYPE
    }
    report("StorageClasses of the AKS clusters", "read", note=classes_note(classes))
    return classes


def _classes(credentials: AzureCredentials, cluster_id: str) -> Classes:
    from kubernetes.client import ApiException  # the kubernetes SDK loads on first use

    where = {k: str(v) for k, v in parse_resource_id(cluster_id).items()}
    clusters = (
        AzureClients.of(credentials, where["subscription"]).container_service().managed_clusters
    )
    try:
        answer = clusters.list_cluster_user_credentials(where["resource_group"], where["name"])
    except HttpResponseError as exc:
        if exc.status_code not in _REFUSED:
            raise
        return _no_access(cluster_id, f"its user credentials refused: {error_code(exc)}")
    api = storage_api(bytes((answer.kubeconfigs or [])[0].value or b""))
    try:
        listing = api.list_storage_class()
    except ApiException as exc:
        if exc.status not in _REFUSED:
            raise
        return _no_access(cluster_id, f"its Kubernetes API answered {exc.status} {exc.reason}")
    except ConnectionProblem as exc:
        return _no_access(cluster_id, f"its Kubernetes API is not reachable: {type(exc).__name__}")
    return [api.api_client.sanitize_for_serialization(item) for item in listing.items]


def _no_access(cluster_id: str, reason: str) -> str:
    get_run_logger().warning("StorageClasses of %s not read: %s", cluster_id, reason)
    return f"StorageClasses not read: {reason}"
