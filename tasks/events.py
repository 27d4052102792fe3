"""Prefect events the flows emit, for automations: `byok.key.rotated`, `byok.key.revoked`,
`byok.key.restored` and `byok.resource.encrypted`, each about an Azure or IBM resource id."""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event


def emit_byok_event(
    name: str,
    resource_id: str,
    kind: str,
    related: dict[str, str] | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Emit `byok.<name>` about `resource_id` (a `kind` such as key, disk-encryption-set),
    with related resources by role (role → id). Never put key material in `payload`."""
    emit_event(
        event=f"byok.{name}",
        resource={
            "prefect.resource.id": f"byok.{kind}.{resource_id}",
            "prefect.resource.name": resource_id.rstrip("/").rsplit("/", 1)[-1],
            "byok.kind": kind,
            "byok.id": resource_id,
        },
        related=[
            {
                "prefect.resource.id": f"byok.{role}.{rid}",
                "prefect.resource.role": role,
                "byok.id": rid,
            }
            for role, rid in (related or {}).items()
        ],
        payload=payload or {},
    )
