"""Fleet inventory at scale: discovery of a seeded fleet through Resource Graph (one paged
query for every subscription) side by side with ARM listing per subscription and type, with
ARM throttling on at the documented rates.

    .venv/bin/python bench/fleet_inventory.py [--subscriptions 10] [--resources 1000]

Prints, for each path: wall time, requests made (and per resource), 429s seen, rows found,
and the Python heap's peak (tracemalloc). The fleet per subscription: a purge-protected vault
with two keys, disk encryption sets on them, disks (every third one on the platform key) and
Basic registries (no customer key)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    Sku,
    VaultCreateOrUpdateParameters,
    VaultProperties,
)

from clients.azure import AzureClients
from console.emulator_blocks import emulator_azure_credentials
from emulator.server import Emulator
from emulator.throttling import Limits
from tasks.inventory import _list_through_arm, _query_graph

REGION = "westeurope"


def seed(emulator: Emulator, subscriptions: int, resources: int) -> tuple[list[str], int]:
    """The fleet, made through the SDKs; returns the subscription ids and resources made."""
    assert emulator.state is not None
    subs = [emulator.identity.subscription_id] + [
        emulator.state.add_subscription(name=f"fleet-{i}") for i in range(1, subscriptions)
    ]
    block = emulator_azure_credentials(emulator, polling_interval_seconds=0.01)
    per_sub = max(resources // subscriptions, 3)
    made = 0
    for n, sub in enumerate(subs):
        clients = AzureClients(block, sub)
        clients.resources().resource_groups.create_or_update("rg-fleet", {"location": REGION})
        vault = (
            clients.keyvault_management()
            .vaults.begin_create_or_update("rg-fleet", f"kv-fleet-{n}", _vault(emulator))
            .result()
        )
        keys = clients.keys(str(vault.properties.vault_uri))
        key_ids = [str(keys.create_rsa_key(f"k{i}", size=2048).id) for i in range(2)]
        sets = max(per_sub // 10, 1)
        registries = max(per_sub // 20, 1)
        compute = clients.compute()
        des_ids = []
        for i in range(sets):
            des = compute.disk_encryption_sets.begin_create_or_update(
                "rg-fleet",
                f"des-{i}",
                {
                    "location": REGION,
                    "identity": {"type": "SystemAssigned"},
                    "properties": {
                        "activeKey": {"keyUrl": key_ids[i % 2], "sourceVault": {"id": vault.id}}
                    },
                },
            ).result()
            des_ids.append(str(des.id))
        for i in range(per_sub - sets - registries):
            encryption = (
                {"type": "EncryptionAtRestWithPlatformKey"}
                if i % 3 == 0
                else {
                    "type": "EncryptionAtRestWithCustomerKey",
                    "diskEncryptionSetId": des_ids[i % len(des_ids)],
                }
            )
            compute.disks.begin_create_or_update(
                "rg-fleet",
                f"disk-{i}",
                {
                    "location": REGION,
                    "properties": {
                        "creationData": {"createOption": "Empty"},
                        "diskSizeGB": 4,
                        "encryption": encryption,
                    },
                },
            ).result()
        for i in range(registries):
            clients.container_registry().registries.begin_create(
                "rg-fleet", f"crfleet{n}x{i}", {"location": REGION, "sku": {"name": "Basic"}}
            ).result()
        made += per_sub + 1  # and the vault
    return subs, made


def _vault(emulator: Emulator) -> VaultCreateOrUpdateParameters:
    assert emulator.state is not None
    return VaultCreateOrUpdateParameters(
        location=REGION,
        properties=VaultProperties(
            tenant_id=emulator.identity.tenant_id,
            sku=Sku(family="A", name="standard"),
            enable_purge_protection=True,
            enable_rbac_authorization=False,
            access_policies=[
                AccessPolicyEntry(
                    tenant_id=emulator.identity.tenant_id,
                    object_id=emulator.state.service_principal.object_id,
                    permissions=Permissions(keys_property=["all"]),
                )
            ],
        ),
    )


def measure(emulator: Emulator, name: str, discover: Callable[[], list[Any]], made: int) -> None:
    emulator.requests.clear()
    tracemalloc.start()
    started = time.perf_counter()
    rows = discover()
    wall = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    logged = emulator.requests.find()
    throttled = sum(1 for r in logged if r.status == 429)
    print(
        f"{name:<28} {wall:8.2f} s  {len(logged):6d} requests "
        f"({len(logged) / made:.3f}/resource)  {throttled:4d} x 429  "
        f"{len(rows):6d} rows  peak heap {peak / 2**20:6.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--resources", type=int, default=1000)
    args = parser.parse_args()
    with Emulator(throttle=Limits()) as emulator:
        started = time.perf_counter()
        subs, made = seed(emulator, args.subscriptions, args.resources)
        print(
            f"seeded {made} resources in {len(subs)} subscriptions "
            f"in {time.perf_counter() - started:.1f} s (ARM throttling on: reads 250/25, "
            "writes 200/10 per subscription and principal)"
        )
        clients = AzureClients(emulator_azure_credentials(emulator))
        block = clients.block
        measure(emulator, "Resource Graph (ours)", lambda: _query_graph(clients, subs), made)
        measure(
            emulator,
            "ARM listing (reference)",
            lambda: [row for sub in subs for row in _list_through_arm(block, sub)],
            made,
        )


if __name__ == "__main__":
    main()
