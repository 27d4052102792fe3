"""Create (or reuse) a resource group."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from prefect import get_run_logger, task

from blocks.azure import AzureCredentials
from clients.azure import AzureClients
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
        get_run_logger().info("Resource group %s exists in %s", name, group.location)
    except ResourceNotFoundError:
        group = groups.create_or_update(name, {"location": location})
        get_run_logger().info("Created resource group %s in %s", name, location)
    return str(group.id)
