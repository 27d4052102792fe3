"""Microsoft.Compute's own throttling policies behind ARM's, and the runtime switch
(`POST /_emulator/throttle`, `byok emulator throttle on|off|show`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clients.azure import AzureClients
from console.cli import main
from console.emulator_cli import publish
from emulator.server import Emulator
from emulator.throttling import ComputePolicy, Limit, Limits, Throttle, compute_policy
from tests.helpers import ManualClock, arm_request

SUB = "5f6a9e1c-0000-4000-8000-00000000b10c"
VM = "/resourceGroups/rg-vm/providers/Microsoft.Compute/virtualMachines/vm1"
OPERATION = "/providers/Microsoft.Compute/locations/eastus/operationStatuses/op1"
DES = "/resourceGroups/rg-vm/providers/Microsoft.Compute/diskEncryptionSets/des1"


def test_vm_calls_draw_from_a_bucket_per_vm_and_one_per_subscription() -> None:
    clock = ManualClock(100.0)
    throttle = Throttle(Limits(), clock)  # Compute's page: a VM takes 12 updates, 4 a minute
    vm, other = f"/subscriptions/{SUB}{VM}", f"/subscriptions/{SUB}{VM}-2"
    drawn = [throttle.take(SUB, "p1", "POST", f"{vm}/restart") for _ in range(13)]

    assert drawn[0].headers["x-ms-ratelimit-remaining-resource"] == "Microsoft.Compute/UpdateVM;11"
    assert drawn[11].compute == (("UpdateVM", 0),)
    refused = drawn[12]
    assert (refused.refused_by, refused.retry_after) == ("UpdateVM", 15)  # 4 tokens a minute
    assert refused.bucket == f"{SUB}/Microsoft.Compute/UpdateVM"
    error = refused.refusal().response()
    assert error.status == 429 and error.headers["Retry-After"] == "15"
    assert error.body["error"]["code"] == "OperationNotAllowed"
    assert [(d["code"], d["target"]) for d in error.body["error"]["details"]] == [
        ("TooManyRequests", "UpdateVM")
    ]
    # another VM has its own bucket; the subscription's (1,500) has 1,488 left
    assert throttle.take(SUB, "p1", "PATCH", other).compute == (("UpdateVM", 11),)
    assert throttle.take(SUB, "p1", "GET", vm).compute == (("LowCostGet", 35),)
    assert throttle.take(SUB, "p1", "POST", f"{vm}/deallocate").compute == (("DeleteVM", 11),)
    clock.now += 15  # one token back for the VM
    assert throttle.take(SUB, "p1", "POST", f"{vm}/start").compute == (("UpdateVM", 0),)
    group = throttle.take(SUB, "p1", "PUT", f"/subscriptions/{SUB}/resourcegroups/rg-vm")
    assert group.retry_after is None and "x-ms-ratelimit-remaining-resource" not in group.headers
    assert throttle.take(SUB, "p1", "GET", f"/subscriptions/{SUB}{DES}").compute == ()


def test_lists_of_vms_draw_from_the_subscriptions_bucket_only() -> None:
    small = ComputePolicy("HighCostGet", None, Limit(2, 1 / 60))
    throttle = Throttle(Limits(compute=(small,)), ManualClock(0.0))
    lists = [
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines",
        f"/subscriptions/{SUB}/resourceGroups/rg-vm/providers/Microsoft.Compute/virtualMachines",
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/virtualMachines",
    ]
    drawn = [throttle.take(SUB, "p1", "GET", path) for path in lists]

    assert [d.compute for d in drawn[:2]] == [(("HighCostGet", 1),), (("HighCostGet", 0),)]
    assert (drawn[2].refused_by, drawn[2].retry_after) == ("HighCostGet", 60)
    # a policy left out of the limits draws nothing (`--no-compute` leaves them all out)
    assert throttle.take(SUB, "p1", "GET", f"/subscriptions/{SUB}{VM}").compute == ()


@pytest.mark.parametrize(
    ("method", "path", "policy"),
    [
        ("GET", VM, "LowCostGet"),
        ("GET", f"{VM}/instanceView", "LowCostGet"),
        ("POST", f"{VM}/retrieveBootDiagnosticsData", "LowCostGet"),
        ("GET", f"{VM}/extensions/ama", "LowCostGet"),
        ("PUT", VM, "PutVM"),
        ("PATCH", VM, "UpdateVM"),
        ("POST", f"{VM}/powerOff", "UpdateVM"),
        ("PUT", f"{VM}/runCommands/rc1", "UpdateVM"),
        ("DELETE", f"{VM}/extensions/ama", "UpdateVM"),
        ("DELETE", VM, "DeleteVM"),
        ("POST", f"{VM}/simulateEviction", "DeleteVM"),
        ("POST", f"{VM}/assessPatches", "VMGuestPatchOperations"),
        ("GET", OPERATION, "GetOperation"),
    ],
)
def test_each_vm_call_counts_on_the_policy_the_page_names(
    method: str, path: str, policy: str
) -> None:
    # a VM's calls count on the VM's bucket too; an operation's status on the operation's
    resource = OPERATION if path == OPERATION else VM
    assert compute_policy(method, f"/subscriptions/{SUB}{path}") == (
        policy,
        f"/subscriptions/{SUB}{resource}".lower(),
    )


@pytest.fixture
def byok(emulator: Emulator, tmp_path: Path, capsys: Any) -> Iterator[Callable[..., str]]:
    """`byok emulator throttle …` (the real command) driving this emulator, published in a
    private state dir; throttling is off again afterwards."""
    publish(emulator, tmp_path)

    def run(*argv: str) -> str:
        assert main(["emulator", "--state-dir", str(tmp_path), "throttle", *argv]) == 0
        return str(capsys.readouterr().out)

    yield run
    emulator.limits, emulator.throttle = None, None


def test_switch_throttling_on_and_off_at_runtime(
    emulator: Emulator, azure: AzureClients, byok: Callable[..., str]
) -> None:
    assert byok("show").strip() == "null"
    assert '"reads": "3/1"' in byok("on", "--reads", "3/1")
    answers = [arm_request(emulator, azure, "GET", VM, api_version="2024-07-01") for _ in range(4)]

    assert [a.status_code for a in answers] == [404, 404, 404, 429]  # no group; then throttled
    assert answers[0].headers["x-ms-ratelimit-remaining-subscription-reads"] == "2"
    assert answers[0].headers["x-ms-ratelimit-remaining-resource"] == (
        "Microsoft.Compute/LowCostGet;35"
    )
    assert answers[3].json()["error"]["code"] == "SubscriptionRequestsThrottled"
    emulator.reset()  # the switch holds across resets, with fresh buckets
    fresh = arm_request(emulator, azure, "GET", VM, api_version="2024-07-01")
    assert fresh.headers["x-ms-ratelimit-remaining-subscription-reads"] == "2"
    assert byok("off").strip() == "null"
    plain = arm_request(emulator, azure, "GET", VM, api_version="2024-07-01")
    assert not [h for h in plain.headers if h.lower().startswith("x-ms-ratelimit")]
    assert '"compute": []' in byok("on", "--no-compute")


def test_a_vm_past_its_update_bucket_is_refused_over_https(
    emulator: Emulator, azure: AzureClients, byok: Callable[..., str]
) -> None:
    byok("on")
    answers = [
        arm_request(emulator, azure, "POST", f"{VM}/restart", api_version="2024-07-01")
        for _ in range(13)
    ]

    assert [a.status_code for a in answers] == [404] * 12 + [429]  # no such VM, then refused
    refused = answers[12]
    assert refused.headers["Retry-After"] == "15"
    assert refused.headers["x-ms-ratelimit-remaining-resource"] == "Microsoft.Compute/UpdateVM;0"
    assert refused.json()["error"]["code"] == "OperationNotAllowed"
    assert refused.json()["error"]["details"][0]["target"] == "UpdateVM"
    listed = arm_request(
        emulator,
        azure,
        "GET",
        "/providers/Microsoft.Compute/virtualMachines",
        api_version="2024-07-01",
    )
    assert listed.status_code == 200
    assert (
        listed.headers["x-ms-ratelimit-remaining-resource"] == "Microsoft.Compute/HighCostGet;899"
    )


def test_switch_refuses_bad_settings(emulator: Emulator) -> None:
    answer = requests.post(
        f"{emulator.base_url}/_emulator/throttle",
        json={"enabled": True, "reads": "0/1"},
        headers={"Authorization": f"Bearer {emulator.admin_token}"},
        verify=str(emulator.ca_path),
        timeout=10,
    )
    assert answer.status_code == 400
    assert "SIZE/RATE" in answer.json()["error"]["message"]
    assert emulator.throttle is None
