"""Key rotation policies as Key Vault keeps them (`GET|PUT /keys/{name}/rotationpolicy`).

Rules, from "Configure cryptographic key auto-rotation in Azure Key Vault"
(learn.microsoft.com/azure/key-vault/keys/how-to-configure-key-rotation): the expiry time
is at least 28 days; a Rotate action triggers at least 7 days after creation or at least 7
days before expiry; a Notify action at least 7 days before expiry; one action of each type.
A key without a policy of its own answers the default one: notify 30 days before expiry."""

from __future__ import annotations

import time
from typing import Any

import isodate

from emulator.http import HttpError

MIN_EXPIRY_DAYS = 28
MIN_TRIGGER_DAYS = 7


def default_rotation_policy() -> dict[str, Any]:
    """What Key Vault answers for a key whose policy was never set."""
    return {
        "lifetimeActions": [
            {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}
        ],
        "attributes": {"expiryTime": None, "created": None, "updated": None},
    }


def days(value: str, field: str) -> float:
    """Days of an ISO 8601 duration (a month as 30 days, a year as 365), or 400 naming it."""
    try:
        duration = isodate.parse_duration(value)
    except (isodate.ISO8601Error, TypeError, ValueError):
        raise HttpError(
            400, "BadParameter", f"{field}: '{value}' is not an ISO 8601 duration."
        ) from None
    if isinstance(duration, isodate.Duration):
        return float(duration.years) * 365 + float(duration.months) * 30 + duration.tdelta.days
    return duration.total_seconds() / 86400


def checked_rotation_policy(body: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """The policy to store, or 400 for a rule it breaks."""
    attributes = body.get("attributes") or {}
    expiry = attributes.get("expiryTime")
    if expiry is not None and days(expiry, "expiryTime") < MIN_EXPIRY_DAYS:
        raise HttpError(
            400, "BadParameter", f"expiryTime must be at least {MIN_EXPIRY_DAYS} days (P28D)."
        )
    seen: set[str] = set()
    for action in body.get("lifetimeActions") or []:
        kind = str((action.get("action") or {}).get("type", "")).lower()
        trigger = action.get("trigger") or {}
        if kind not in ("rotate", "notify"):
            raise HttpError(400, "BadParameter", f"Unknown lifetime action type '{kind}'.")
        if kind in seen:
            raise HttpError(400, "BadParameter", f"Only one '{kind}' lifetime action is allowed.")
        seen.add(kind)
        after, before = trigger.get("timeAfterCreate"), trigger.get("timeBeforeExpiry")
        if (after is None) == (before is None):
            raise HttpError(
                400,
                "BadParameter",
                "A trigger takes exactly one of timeAfterCreate and timeBeforeExpiry.",
            )
        if kind == "notify" and after is not None:
            raise HttpError(400, "BadParameter", "A Notify action triggers on timeBeforeExpiry.")
        for name, value in (("timeAfterCreate", after), ("timeBeforeExpiry", before)):
            if value is not None and days(value, name) < MIN_TRIGGER_DAYS:
                raise HttpError(
                    400, "BadParameter", f"{name} must be at least {MIN_TRIGGER_DAYS} days (P7D)."
                )
        if before is not None and expiry is None:
            raise HttpError(400, "BadParameter", "timeBeforeExpiry needs the policy's expiryTime.")
    now = int(time.time())
    created = ((old or {}).get("attributes") or {}).get("created") or now
    return {
        "lifetimeActions": body.get("lifetimeActions") or [],
        "attributes": {"expiryTime": expiry, "created": created, "updated": now},
    }
