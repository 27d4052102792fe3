"""Events the flows emit, read back from the Prefect API (what automations see)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker

from emulator.server import Emulator
from flows.disk_encryption_set import (
    DesKeyRotationRequest,
    DiskEncryptionSetRequest,
    prepare_disk_encryption_set,
    rotate_disk_encryption_set_key,
)


def byok_events(
    since: float, ids: Iterable[str] = (), tag: str | None = None
) -> list[dict[str, Any]]:
    """byok.* events recorded by the server since `since` (waits for them to land) about the
    resources `ids`, or related to runs tagged `tag`: the session's server holds every xdist
    worker's events."""
    import datetime as dt

    EventsWorker.drain_all(timeout=10)
    start = dt.datetime.fromtimestamp(since, dt.UTC).isoformat()
    query: dict[str, Any] = {"event": {"prefix": ["byok."]}, "occurred": {"since": start}}
    if ids:
        query["resource"] = {"labels": {"byok.id": list(ids)}}
    if tag:
        query["related"] = {"id": [f"prefect.tag.{tag}"]}
    deadline = time.monotonic() + 15
    while True:
        with get_client(sync_client=True) as client:
            response = client.request("POST", "/events/filter", json={"filter": query, "limit": 50})
        events = response.json()["events"]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def test_encryption_and_rotation_events(azure_block: str, emulator: Emulator) -> None:
    since = time.time() - 1
    prepared = prepare_disk_encryption_set(
        DiskEncryptionSetRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-ev",
            location="westeurope",
            vault_name="kv-ev",
            key_name="k",
            des_name="des-ev",
            propagation_timeout_minutes=0.5,
        )
    )
    rotate_disk_encryption_set_key(
        DesKeyRotationRequest(
            azure_credentials_block=azure_block,
            resource_group="rg-ev",
            des_name="des-ev",
            timeout_minutes=0.5,
            poll_seconds=0.05,
        )
    )
    mine = {prepared.disk_encryption_set.id, prepared.key.versionless_id}
    # the server stores events in batches: seconds, more on a loaded machine
    deadline = time.monotonic() + 60
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(events) < 2:
        time.sleep(0.5)
        events = byok_events(since, ids=mine)
    assert sorted(e["event"] for e in events) == ["byok.key.rotated", "byok.resource.encrypted"]
    rotated = next(e for e in events if e["event"] == "byok.key.rotated")
    assert rotated["related"][0]["byok.id"] == prepared.disk_encryption_set.id
    assert rotated["payload"]["new_version"] != prepared.key.version
