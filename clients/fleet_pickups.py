"""Waiting for the sets and registries that follow their key's latest version to pick the new
one up: each round lists every subscription's sets or registries once, instead of reading each
dependent on a thread of its own. Azure takes up to an hour to pick a version up; a thread per
dependent held the moves that long (`max_concurrency` of them at a time), and a read per
dependent per poll spends ARM's read bucket (250, refilling 25 a second per subscription)
where one listing reads a page of 100 (`bench/fleet_rotation.py`)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from blocks.azure import AzureCredentials
from byok.acr_models import registry_key_state
from byok.azure_errors import is_transient_azure, one_line
from byok.disk_encryption_set_models import des_key_state
from byok.polling import timed_out
from byok.rotation import (
    Dependent,
    DependentKind,
    FleetRotationRequest,
    RotationRow,
    Status,
    moved_row,
)
from clients.azure import AzureClients
from clients.disk_encryption_sets import read_des
from clients.registries import read_registry

DONE = frozenset({"done"})
PAGE = 100  # resources a listing's page holds (ARM's compute and registry lists, the emulator)


class _Kind(NamedTuple):
    """What messages call a kind of dependent, its listing in a subscription, how far one
    has moved to a version."""

    name: str
    plural: str
    listing: Callable[[AzureClients], Iterable[Any]]
    read: Callable[[AzureClients, str, str], Any]  # one by group and name (None: gone)
    state_of: Callable[[Any, str], str]


_KINDS = {
    DependentKind.DISK_ENCRYPTION_SET: _Kind(
        "Disk encryption set",
        "disk encryption sets",
        lambda clients: clients.compute().disk_encryption_sets.list(),
        read_des,
        des_key_state,
    ),
    DependentKind.REGISTRY: _Kind(
        "Registry",
        "registries",
        lambda clients: clients.container_registry().registries.list(),
        read_registry,
        registry_key_state,
    ),
}


def is_pickup(dependent: Dependent, key: RotationRow) -> bool:
    """Whether the dependent is left to pick its rotated key's new version up by itself."""
    return dependent.follows_latest and dependent.kind in _KINDS and key.status != Status.FAILED


def await_pickups(
    credentials: AzureCredentials,
    pickups: list[tuple[Dependent, RotationRow]],
    request: FleetRotationRequest,
) -> list[RotationRow]:
    """One row per pickup, in order: verified once its set or registry reports the new
    version (a set: re-wrapping done too), failed with the reason when its automatic rotation
    reports an error, its listing (or read) is refused, or `pickup_timeout_minutes` pass. A
    subscription's pickups are listed together, or read one by one once fewer are left than
    its listing has pages; a read that fails transiently is tried again the next round."""
    timeout_seconds = request.pickup_timeout_minutes * 60
    deadline = time.monotonic() + timeout_seconds
    rows = {d.resource_id.lower(): moved_row(d, key) for d, key in pickups}
    pending = {d.resource_id.lower(): d for d, _ in pickups}
    states: dict[str, str] = {}

    def fail(rid: str, reason: str) -> None:
        pending.pop(rid)
        rows[rid] = rows[rid].model_copy(update={"status": Status.FAILED, "reason": reason})

    sizes: dict[tuple[str, DependentKind], list[int]] = {}  # what each listing held
    while pending:
        for group, rids in _groups(pending).items():
            of = _KINDS[group[1]]
            clients = AzureClients.of(credentials, group[0])
            dependents = {rid: pending[rid] for rid in rids}
            found = _read_group(of, clients, dependents, sizes.setdefault(group, []), fail)
            for rid, resource in found.items():
                if resource is None:
                    fail(rid, f"{of.name} {pending[rid].name} is no longer in its subscription")
                    continue
                version = str(rows[rid].version)
                try:
                    states[rid] = of.state_of(resource, version)
                except Exception as exc:  # its automatic rotation failed: its row
                    fail(rid, one_line(exc))
                    continue
                if states[rid] in DONE:
                    pending.pop(rid)
        if pending and time.monotonic() >= deadline:
            for rid, dependent in list(pending.items()):
                what = _KINDS[dependent.kind].name
                state = states.get(rid, "not read")
                fail(rid, str(timed_out(f"{what} {dependent.name}", state, DONE, timeout_seconds)))
        if pending:
            time.sleep(min(request.poll_seconds, max(0.0, deadline - time.monotonic())))
    return [rows[d.resource_id.lower()] for d, _ in pickups]


def _groups(pending: dict[str, Dependent]) -> dict[tuple[str, DependentKind], list[str]]:
    """The pending dependents by subscription and kind."""
    groups: dict[tuple[str, DependentKind], list[str]] = defaultdict(list)
    for rid, dependent in pending.items():
        groups[(dependent.subscription_id.lower(), dependent.kind)].append(rid)
    return groups


def _read_group(
    of: _Kind,
    clients: AzureClients,
    dependents: dict[str, Dependent],
    sizes: list[int],
    fail: Callable[[str, str], None],
) -> dict[str, Any]:
    """One subscription's pending dependents of a kind as ARM reports them (None: gone):
    listed (its size kept in `sizes`), or read one by one once fewer are left than the last
    listing had pages. A refusal fails those it covers; a transient failure leaves them out
    until the next round."""
    found: dict[str, Any] = {}
    if sizes and len(dependents) < -(-sizes[-1] // PAGE):
        for rid, dependent in dependents.items():
            try:
                found[rid] = of.read(clients, dependent.resource_group, dependent.name)
            except Exception as exc:  # refused: its row; else the next round
                if not is_transient_azure(exc):
                    fail(rid, f"reading it: {one_line(exc)}")
        return found
    try:
        listed = {str(r.id).lower(): r for r in of.listing(clients)}
    except Exception as exc:  # refused: these dependents' rows; else the next round
        if not is_transient_azure(exc):
            for rid in dependents:
                fail(rid, f"listing its subscription's {of.plural}: {one_line(exc)}")
        return found
    sizes.append(len(listed))
    return {rid: listed.get(rid) for rid in dependents}
