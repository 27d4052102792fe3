"""Waiting for the sets and registries to report their key's new version (those that follow
the latest version to pick it up, those pinned to a version to finish their update: a set
re-wraps its disks): each round lists every subscription's sets or registries once, instead
of reading each dependent on a thread of its own. Azure takes up to an hour to pick a version
up, and a set's re-wrap takes as long as its disks need; a thread per dependent held the
moves that long (`max_concurrency` of them at a time), and a read per dependent per poll
spends ARM's read bucket (250, refilling 25 a second per subscription) where one listing
reads a page of 100 (`bench/fleet_rotation.py`)."""

from __future__ import annotations

import queue
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
    listing: Callable[[AzureClients], Iterable[Any]]
    read: Callable[[AzureClients, str, str], Any]  # one by group and name (None: gone)
    state_of: Callable[[Any, str], str]


_KINDS = {
    DependentKind.DISK_ENCRYPTION_SET: _Kind(
        "Disk encryption set",
        lambda clients: clients.compute().disk_encryption_sets.list(),
        read_des,
        des_key_state,
    ),
    DependentKind.REGISTRY: _Kind(
        "Registry",
        lambda clients: clients.container_registry().registries.list(),
        read_registry,
        registry_key_state,
    ),
}


def is_pickup(dependent: Dependent, key: RotationRow) -> bool:
    """Whether the dependent is left to pick its rotated key's new version up by itself."""
    return dependent.follows_latest and dependent.kind in _KINDS and key.status != Status.FAILED


class Pickups:
    """The sets and registries waited for together until each reports its key's new version:
    those that follow the latest version from the start, those pinned to a version as their
    update hands them over (`add`, from any thread; a set re-wraps its disks for a while
    after its update). `wait` (on a thread of its own) runs until `close` and nothing is left:
    a row per dependent, verified once it reports the version (a set: re-wrapping done too),
    failed with the reason when its automatic rotation reports an error, its listing (or
    read) is refused, or `pickup_timeout_minutes` pass from its hand-over. A subscription's
    dependents are listed together, or read one by one once fewer are left than its listing
    has pages; a read that fails transiently is tried again the next round."""

    _CLOSED = None

    def __init__(
        self,
        credentials: AzureCredentials,
        request: FleetRotationRequest,
        pickups: list[tuple[Dependent, RotationRow]],
    ) -> None:
        self._credentials = credentials
        self._request = request
        self._arrived: queue.SimpleQueue[tuple[Dependent, RotationRow] | None] = queue.SimpleQueue()
        for dependent, key in pickups:
            self.add(dependent, key)

    def add(self, dependent: Dependent, key: RotationRow) -> None:
        """Wait for `dependent` to report `key`'s new version too."""
        self._arrived.put((dependent, key))

    def close(self) -> None:
        """No more are added: `wait` returns once those added are done."""
        self._arrived.put(self._CLOSED)

    def wait(self) -> dict[str, RotationRow]:
        """Every added dependent's row, by its id in lower case."""
        timeout_seconds = self._request.pickup_timeout_minutes * 60
        poll_seconds = self._request.poll_seconds
        rows: dict[str, RotationRow] = {}
        pending: dict[str, Dependent] = {}
        deadlines: dict[str, float] = {}
        states: dict[str, str] = {}
        closed = False

        def take(block: bool) -> bool:
            """Those handed over since the last round (waiting for one with `block`); True
            once closed."""
            while True:
                try:
                    arrived = self._arrived.get(block=block)
                except queue.Empty:
                    return False
                if arrived is self._CLOSED:
                    return True
                dependent, key = arrived
                rid = dependent.resource_id.lower()
                rows[rid], pending[rid] = moved_row(dependent, key), dependent
                deadlines[rid] = time.monotonic() + timeout_seconds
                block = False

        def fail(rid: str, reason: str) -> None:
            pending.pop(rid)
            rows[rid] = rows[rid].model_copy(update={"status": Status.FAILED, "reason": reason})

        sizes: dict[tuple[str, DependentKind], list[int | None]] = {}  # what each listing held
        while True:
            if not pending and not closed:
                # nothing to read: wait for a hand-over, then a poll's interval, as a poll
                # after its update would
                closed = take(block=True)
                if pending:
                    time.sleep(poll_seconds)
            closed = take(block=False) or closed
            if not pending:
                if closed:
                    return rows
                continue
            for group, rids in _groups(pending).items():
                of = _KINDS[group[1]]
                clients = AzureClients.of(self._credentials, group[0])
                dependents = {rid: pending[rid] for rid in rids}
                found = _read_group(of, clients, dependents, sizes.setdefault(group, []), fail)
                for rid, resource in found.items():
                    if resource is None:
                        fail(rid, f"{of.name} {pending[rid].name} is no longer in its subscription")
                        continue
                    try:
                        states[rid] = of.state_of(resource, str(rows[rid].version))
                    except Exception as exc:  # its automatic rotation failed: its row
                        fail(rid, one_line(exc))
                        continue
                    if states[rid] in DONE:
                        pending.pop(rid)
            now = time.monotonic()
            for rid in [rid for rid in pending if deadlines[rid] <= now]:
                dependent = pending[rid]
                what, state = _KINDS[dependent.kind].name, states.get(rid, "not read")
                fail(rid, str(timed_out(f"{what} {dependent.name}", state, DONE, timeout_seconds)))
            if pending:
                soonest = min(deadlines[rid] for rid in pending)
                time.sleep(min(poll_seconds, max(0.0, soonest - time.monotonic())))


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
    sizes: list[int | None],
    fail: Callable[[str, str], None],
) -> dict[str, Any]:
    """One subscription's pending dependents of a kind as ARM reports them (None: gone):
    listed (its size kept in `sizes`), or read one by one once fewer are left than the last
    listing had pages, or once the listing was refused (a role assigned on resource groups
    only may read each but not list the subscription's: `sizes` holds None). A transient
    failure leaves them out until the next round; a refused read fails its dependent."""
    if sizes and (sizes[-1] is None or len(dependents) < -(-sizes[-1] // PAGE)):
        found: dict[str, Any] = {}
        for rid, dependent in dependents.items():
            try:
                found[rid] = of.read(clients, dependent.resource_group, dependent.name)
            except Exception as exc:  # refused: its row; else the next round
                if not is_transient_azure(exc):
                    fail(rid, f"reading it: {one_line(exc)}")
        return found
    try:
        listed = {str(r.id).lower(): r for r in of.listing(clients)}
    except Exception as exc:  # refused: read each; else the next round
        if is_transient_azure(exc):
            return {}
        sizes.append(None)
        return _read_group(of, clients, dependents, sizes, fail)
    sizes.append(len(listed))
    return {rid: listed.get(rid) for rid in dependents}
