"""Create (or reuse) a resource group."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from prefect import task

from blocks.azure import AzureCredentials
from clients.azure import AzureClients
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


@task(name="Create resource group", **STEP_RETRIES)
def ensure_resource_group(
    credentials: AzureCredentials, subscription_id: str | None, name: str, location: str
) -> str:
    """Get or create the group; an existing one elsewhere is fine (resources keep their own
    locations). Returns the group's id."""
    groups = AzureClients.of(credentials, subscription_id).resources().resource_groups
    try:
        group = groups.get(name)
        report(str(group.id), None, note=f"in {group.location}")
    except ResourceNotFoundError:
        group = groups.create_or_update(name, {"location": location})
        report(str(group.id), "create", note=f"in {location}")
    return str(group.id)
