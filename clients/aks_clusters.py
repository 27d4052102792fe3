"""Managed clusters as the AKS task modules read them (and their user kubeconfig), and a
write refused while an operation runs on one."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerservice.models import ManagedCluster

from byok.azure_errors import or_none
from byok.errors import ResourceError
from byok.retrying import retry_while
from byok.sdk_values import text
from clients.azure import AzureClients

# AKS's answer to a write while another operation runs on the cluster: "Operation is not
# allowed: Another operation (Updating) is in progress, please wait for it to finish before
# starting a new operation" (OperationNotAllowed, Azure/azure-workload-identity#417); ARM's
# generic code for the same, AnotherOperationInProgress.
BUSY_CODES = frozenset({"OperationNotAllowed", "AnotherOperationInProgress"})
SETTLED_STATES = frozenset({"Succeeded", "Failed", "Canceled"})


def read_cluster(clients: AzureClients, resource_group: str, name: str) -> ManagedCluster | None:
    """The cluster, or None."""
    return or_none(lambda: clients.container_service().managed_clusters.get(resource_group, name))


def user_kubeconfig(clients: AzureClients, resource_group: str, name: str) -> bytes:
    """The cluster's user kubeconfig (`az aks get-credentials`; a POST that reads)."""
    clusters = clients.container_service().managed_clusters
    found = clusters.list_cluster_user_credentials(resource_group, name)
    return bytes((found.kubeconfigs or [])[0].value or b"")


def is_busy(exc: BaseException) -> bool:
    """A write refused (409) because an operation runs on the cluster: another one, or the
    write itself sent before, its answer lost."""
    code = getattr(getattr(exc, "error", None), "code", None)
    return isinstance(exc, HttpResponseError) and exc.status_code == 409 and code in BUSY_CODES


def settled_cluster(
    clients: AzureClients, resource_group: str, name: str, timeout_seconds: float
) -> ManagedCluster:
    """The cluster once no operation runs on it (read every few seconds; ResourceError after
    `timeout_seconds`)."""

    def read() -> ManagedCluster:
        cluster = read_cluster(clients, resource_group, name)
        state = cluster and cluster.properties and cluster.properties.provisioning_state
        if cluster is not None and text(state) in SETTLED_STATES:
            return cluster
        raise ResourceError(f"{resource_group}/{name}", "an operation is still running on it")

    return retry_while(
        read,
        lambda exc: isinstance(exc, ResourceError),
        timeout_seconds=timeout_seconds,
        first_delay=2,
    )
