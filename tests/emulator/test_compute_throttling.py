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
from emulator.throttling import ComputePolicy, Limit, Limits, Throttle
from tests.helpers import arm_request

SUB = "5f6a9e1c-0000-4000-8000-00000000b10c"
VM = "/resourceGroups/rg-vm/providers/Microsoft.Compute/virtualMachines/vm1"


def test_vm_calls_draw_from_compute_policies_after_arm() -> None:
    put = ComputePolicy("PutVM3Min", frozenset({"PUT", "PATCH"}), Limit(2, 0.01))
    get = ComputePolicy("HighCostGet3Min", frozenset({"GET"}), Limit(5, 0.01))
    throttle = Throttle(Limits(compute=(put, get)), clock=lambda: 100.0)
    path = f"/subscriptions/{SUB}{VM}"
    drawn = [throttle.take(SUB, "p1", "PUT", path) for _ in range(3)]

    assert [d.headers["x-ms-ratelimit-remaining-resource"] for d in drawn[:2]] == [
        "Microsoft.Compute/PutVM3Min;1",
        "Microsoft.Compute/PutVM3Min;0",
    ]
    refused = drawn[2]
    assert (refused.refused_by, refused.retry_after) == ("PutVM3Min", 100)  # 0.01 token/s
    assert refused.bucket == f"{SUB}/Microsoft.Compute/PutVM3Min"
    error = refused.refusal().response()
    assert error.status == 429 and error.headers["Retry-After"] == "100"
    assert error.body["error"]["code"] == "OperationNotAllowed"
    assert [(d["code"], d["target"]) for d in error.body["error"]["details"]] == [
        ("TooManyRequests", "PutVM3Min")
    ]
    other = throttle.take(SUB, "p1", "PUT", f"/subscriptions/{SUB}/resourcegroups/rg-vm")
    assert other.retry_after is None and "x-ms-ratelimit-remaining-resource" not in other.headers
    assert throttle.take(SUB, "p1", "GET", path).compute == (("HighCostGet3Min", 4),)
    assert throttle.take(SUB, "p1", "DELETE", path).compute == ()  # no delete policy given


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
        "Microsoft.Compute/HighCostGet3Min;239,Microsoft.Compute/HighCostGet30Min;1199"
    )
    assert answers[3].json()["error"]["code"] == "SubscriptionRequestsThrottled"
    emulator.reset()  # the switch holds across resets, with fresh buckets
    fresh = arm_request(emulator, azure, "GET", VM, api_version="2024-07-01")
    assert fresh.headers["x-ms-ratelimit-remaining-subscription-reads"] == "2"
    assert byok("off").strip() == "null"
    plain = arm_request(emulator, azure, "GET", VM, api_version="2024-07-01")
    assert not [h for h in plain.headers if h.lower().startswith("x-ms-ratelimit")]
    assert '"compute": []' in byok("on", "--no-compute")


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
