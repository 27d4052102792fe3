"""Before any write: the subscription exists and each requested region is one of its
locations (`GET /subscriptions/{id}/locations`), checked by any flow with
`check_subscription_regions(credentials or block name, subscription_id, {field: region})`."""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from prefect import get_run_logger, task

from blocks.azure import AzureCredentials
from byok.azure_errors import error_code
from byok.validation import InvalidRequest, check_regions, region_key
from clients.azure import AzureClients
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
