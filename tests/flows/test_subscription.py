"""The subscription and region check every flow makes before its first write, against the
emulator's `GET /subscriptions/{id}/locations`."""

from __future__ import annotations

import pytest

from blocks.azure import AzureCredentials
from byok.validation import InvalidRequest
from emulator.faults import Fault
from emulator.server import Emulator
from tasks.subscription import check_subscription_regions

UNKNOWN = "00000000-0000-0000-0000-0000000000ff"


def test_regions_by_name_or_display_name(
    prefect_harness: None, azure_credentials: AzureCredentials
) -> None:
    check_subscription_regions(azure_credentials, None, {"a": "westeurope", "b": "West Europe"})
    with pytest.raises(InvalidRequest) as info:
        check_subscription_regions(azure_credentials, None, {"target": "mars-north"})
    assert (info.value.field, info.value.value) == ("target", "mars-north")
    assert info.value.rule.startswith("not a region of this subscription (") and (
        "westeurope" in info.value.rule
    )


@pytest.mark.parametrize("served", [True, False])
def test_unknown_subscription_is_named(
    prefect_harness: None, azure_credentials: AzureCredentials, emulator: Emulator, served: bool
) -> None:
    if not served:
        emulator.faults.add(
            Fault("status", method="GET", path="/locations$", status=404, count=None)
        )
    with pytest.raises(InvalidRequest) as info:
        check_subscription_regions(azure_credentials, UNKNOWN, {"location": "westeurope"})
    assert str(info.value) == (
        f"subscription_id = '{UNKNOWN}': no such subscription, or these credentials cannot see it"
    )


def test_a_list_not_served_skips_the_region_check(
    prefect_harness: None, azure_credentials: AzureCredentials, emulator: Emulator
) -> None:
    emulator.faults.add(Fault("status", method="GET", path="/locations$", status=404, count=None))
    check_subscription_regions(azure_credentials, None, {"location": "mars-north"})
    assert emulator.requests.find("GET", r"/subscriptions/[^/]+$")  # the subscription checked
