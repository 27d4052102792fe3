"""Before any write: the subscription exists and each requested region is one of its
locations (`GET /subscriptions/{id}/locations`), checked by any flow with
`check_subscription_regions(credentials or block name, subscription_id, {field: region})`;
and the credentials hold the actions a flow needs (`check_permissions`). In a plan: whether
a resource group would be created (`plan_resource_group`)."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.core.tools import resource_id
from prefect import get_run_logger, task

from blocks.azure import AzureCredentials
from byok.azure_errors import error_code, or_none
from byok.errors import ServiceRefused
from byok.permissions import RESOURCE_GROUP_WRITE, missing
from byok.validation import InvalidRequest, check_regions, region_key
from clients.azure import AzureClients
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


def _is_unknown_subscription(exc: ResourceNotFoundError) -> bool:
    return error_code(exc) == "SubscriptionNotFound"


def _unknown_subscription(subscription_id: str) -> InvalidRequest:
    return InvalidRequest(
        "subscription_id",
        subscription_id,
        "no such subscription, or these credentials cannot see it",
    )


@task(name="Check subscription and regions", **STEP_RETRIES)
def check_subscription_regions(
    credentials: AzureCredentials | str, subscription_id: str | None, regions: dict[str, str]
) -> None:
    """The subscription exists and every region (field → region name) is one of its
    locations. Where the location list is not served (404 without SubscriptionNotFound),
    only the subscription is checked and a warning says the regions were not."""
    if isinstance(credentials, str):
        credentials = AzureCredentials.load_saved(credentials)
    clients = AzureClients.of(credentials, subscription_id)
    sub = clients.subscription_id
    subscriptions = clients.subscriptions().subscriptions
    try:
        locations = list(subscriptions.list_locations(sub))
    except ResourceNotFoundError as exc:
        if _is_unknown_subscription(exc):
            raise _unknown_subscription(sub) from None
        try:
            subscriptions.get(sub)
        except ResourceNotFoundError as missing:
            if _is_unknown_subscription(missing):
                raise _unknown_subscription(sub) from None
            raise
        get_run_logger().warning(
            "The location list of subscription %s is not served: regions %s not checked",
            sub,
            ", ".join(f"{f}={r}" for f, r in regions.items()),
        )
        return
    known = {region_key(str(loc.name)): str(loc.name) for loc in locations}
    known |= {region_key(str(loc.display_name)): str(loc.name) for loc in locations}
    check_regions(regions, known)


@task(name="Check the credentials' permissions", **STEP_RETRIES)
def check_permissions(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    actions: list[str],
    flow_name: str,
) -> None:
    """Before any write: the credentials hold every action the flow will need at the
    resource group (at the subscription when the group is still to be made, which then
    also needs the group's write); ServiceRefused naming the missing actions otherwise."""
    clients = AzureClients.of(credentials, subscription_id)
    subscription = f"/subscriptions/{clients.subscription_id}"
    if clients.resources().resource_groups.check_existence(resource_group):
        scope = f"{subscription}/resourceGroups/{resource_group}"
    else:
        scope, actions = subscription, [RESOURCE_GROUP_WRITE, *actions]
    lacking = missing(clients.permissions(scope), actions)
    if lacking:
        raise ServiceRefused(
            scope,
            f"these credentials lack {', '.join(lacking)}: grant the roles the README's "
            f"permissions table lists for {flow_name}",
        )


@task(name="Plan the resource group", **STEP_RETRIES)
def plan_resource_group(
    credentials: AzureCredentials, subscription_id: str | None, name: str
) -> bool:
    """Report whether `ensure_resource_group` would create the group; True when it exists."""
    clients = AzureClients.of(credentials, subscription_id)
    group = or_none(lambda: clients.resources().resource_groups.get(name))
    where = resource_id(subscription=clients.subscription_id, resource_group=name)
    report(where, None if group else "create", step="Create resource group", planned=True)
    return group is not None
