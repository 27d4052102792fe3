"""Crash matrix of the disk encryption set and registry create flows: each write a clean run
makes, failed around in each way (answer lost once, 504 after the write, answer lost on every
try), leaves no duplicate, and every run completes on its own or on one re-run. A
representative subset runs by default; the whole matrix is marked slow."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from emulator.server import Emulator
from flows.acr import EncryptedRegistryRequest, create_encrypted_registry
from flows.disk_encryption_set import DiskEncryptionSetRequest, prepare_disk_encryption_set
from tests import crash


def des_run(block: str) -> Callable[[], Any]:
    request = DiskEncryptionSetRequest(
        azure_credentials_block=block,
        resource_group="rg-cm",
        location="westeurope",
        vault_name="kv-cm",
        key_name="cm-key",
        key_size=2048,
        des_name="des-cm",
        propagation_timeout_minutes=0.5,
    )
    return lambda: prepare_disk_encryption_set(request)


def acr_run(block: str) -> Callable[[], Any]:
    request = EncryptedRegistryRequest(
        azure_credentials_block=block,
        resource_group="rg-cm",
        location="westeurope",
        registry_name="acrcm1",
        identity_name="cm-identity",
        vault_name="kv-cm",
        key_name="cm-key",
        key_size=2048,
        automatic_rotation=False,
        propagation_timeout_minutes=0.5,
    )
    return lambda: create_encrypted_registry(request)


FLOWS = {"des": des_run, "acr": acr_run}
# The writes whose lost answers used to duplicate or block, each with one way of failing: the
# key version (a POST azure-core re-sent), the set or registry itself (a re-sent PUT refused),
# the set's key check (a PATCH).
FAST = {
    "des": [
        ("POST", r"/keys/cm-key/create$", "504-after"),
        ("POST", r"/keys/cm-key/create$", "lost-once"),
        ("PUT", r"/diskEncryptionSets/des-cm$", "lost-once"),
        ("PATCH", r"/diskEncryptionSets/des-cm$", "504-after"),
    ],
    "acr": [
        ("POST", r"/keys/cm-key/create$", "504-after"),
        ("PUT", r"/registries/acrcm1$", "lost-once"),
    ],
}


def clean(emulator: Emulator, reset: Callable[[], None], run: Callable[[], Any]) -> crash.Clean:
    found = crash.clean_run(emulator, reset, run)
    assert found.writes, "a clean run writes"
    return found


def show(flow: str, outcomes: list[crash.Outcome]) -> dict[str, int]:
    summary = crash.summary(outcomes)
    print(f"\n{flow} crash matrix: {summary}\n{crash.report(outcomes)}")
    return summary


@pytest.mark.parametrize("flow", ["des", "acr"])
def test_lost_answers_on_the_risky_writes_ride_through(
    azure_block: str, emulator: Emulator, reset_emulator: Callable[[], None], flow: str
) -> None:
    run = FLOWS[flow](azure_block)
    baseline = clean(emulator, reset_emulator, run)
    outcomes = [
        crash.scenario(
            emulator, reset_emulator, run, baseline, write, failure, crash.FAILURES[failure]
        )
        for method, pattern, failure in FAST[flow]
        for write in baseline.writes
        if write.method == method and re.search(pattern, write.path)
    ]
    summary = show(flow, outcomes)
    assert summary["scenarios"] == len(FAST[flow]), crash.report(outcomes)
    assert summary["duplicates"] == summary["not completed"] == 0, crash.report(outcomes)
    assert summary["faults that never fired"] == summary["needed a re-run"] == 0, crash.report(
        outcomes
    )


@pytest.mark.slow
@pytest.mark.parametrize("flow", ["des", "acr"])
def test_full_crash_matrix(
    azure_block: str, emulator: Emulator, reset_emulator: Callable[[], None], flow: str
) -> None:
    run = FLOWS[flow](azure_block)
    baseline = clean(emulator, reset_emulator, run)
    outcomes = crash.matrix(emulator, reset_emulator, run, baseline, crash.FAILURES)
    summary = show(flow, outcomes)
    assert summary["duplicates"] == summary["not completed"] == 0, crash.report(outcomes)
    assert summary["faults that never fired"] == 0, crash.report(outcomes)
    lost_once = [o for o in outcomes if o.failure != "lost-always"]
    assert not [o for o in lost_once if o.reruns], crash.report(outcomes)
