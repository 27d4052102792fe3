"""Fleet inventory at scale: discovery of a seeded fleet through Resource Graph (one paged
query for every subscription) side by side with ARM listing per subscription and type, with
ARM throttling on at the documented rates.

    .venv/bin/python bench/fleet_inventory.py [--subscriptions 10] [--resources 1000] [--flow]

Prints, for each path: wall time, requests made (and per resource), 429s seen, rows found,
and the Python heap's peak (tracemalloc). The fleet is `console.fleet_seed`'s, seeded with
throttling off. `--flow` also runs the whole `inventory-customer-managed-keys` flow (keys
read, controls judged, files written, artifacts and events) both ways, against the Prefect
API in the environment (PREFECT_API_URL, e.g. a server on `./dev postgres`)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from byok.inventory.request import InventoryRequest
from clients.azure import AzureClients
from console.emulator_blocks import emulator_azure_credentials
from console.fleet_seed import seed_fleet
from emulator.server import Emulator
from emulator.throttling import Limits, Throttle
from flows.inventory import inventory_customer_managed_keys
from tasks.inventory import _list_through_arm, _query_graph


def measure(emulator: Emulator, name: str, discover: Callable[[], Any], made: int) -> None:
    emulator.requests.clear()
    tracemalloc.start()
    started = time.perf_counter()
    found = discover()
    rows = found if isinstance(found, list) else range(found.rows)
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
    parser.add_argument("--flow", action="store_true", help="also time the whole flow")
    args = parser.parse_args()
    with Emulator(subscriptions=args.subscriptions) as emulator:
        assert emulator.state is not None
        subs = emulator.state.ensure_subscriptions(args.subscriptions)
        started = time.perf_counter()
        fleet = seed_fleet(
            emulator_azure_credentials(emulator, polling_interval_seconds=0.01),
            subscriptions=subs,
            resources=args.resources,
        )
        made = fleet.resources
        print(
            f"seeded {made} resources in {len(subs)} subscriptions "
            f"in {time.perf_counter() - started:.1f} s (throttling off); discovery with ARM "
            "throttling on: reads 250/25, writes 200/10 per subscription and principal"
        )
        emulator.throttle = Throttle(Limits())
        clients = AzureClients(emulator_azure_credentials(emulator))
        block = clients.block
        measure(emulator, "Resource Graph (ours)", lambda: _query_graph(clients, subs), made)
        measure(
            emulator,
            "ARM listing (reference)",
            lambda: [row for sub in subs for row in _list_through_arm(block, sub)],
            made,
        )
        if args.flow:
            block.save("bench-azure", overwrite=True)
            for graph in (True, False):
                with tempfile.TemporaryDirectory() as folder:
                    request = InventoryRequest(
                        azure_credentials_block="bench-azure",
                        subscriptions=subs,
                        use_resource_graph=graph,
                        report_dir=folder,
                    )
                    name = f"flow, {'Resource Graph' if graph else 'ARM listing'}"
                    measure(emulator, name, partial(inventory_customer_managed_keys, request), made)


if __name__ == "__main__":
    main()
