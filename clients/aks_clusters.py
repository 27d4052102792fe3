"""Managed clusters as the AKS task modules read them."""

from __future__ import annotations

from azure.mgmt.containerservice.models import ManagedCluster

from byok.azure_errors import or_none
from clients.azure import AzureClients


def read_cluster(clients: AzureClients, resource_group: str, name: str) -> ManagedCluster | None:
    """The cluster, or None."""
    return or_none(lambda: clients.container_service().managed_clusters.get(resource_group, name))
