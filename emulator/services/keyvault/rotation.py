"""Key rotation policies as Key Vault keeps them (`GET|PUT /keys/{name}/rotationpolicy`), and
the rotations they make on the emulator's clock.

Rules, from "Configure cryptographic key auto-rotation in Azure Key Vault"
(learn.microsoft.com/azure/key-vault/keys/how-to-configure-key-rotation) and the service's
behaviour as lowkey-vault models it (https://github.com/nagyesta/lowkey-vault/issues/181):
the expiry time is at least 28 days; a Rotate action triggers at least 7 days after creation,
or before expiry (which needs the policy's expiry time) but at least 7 days after creation;
a Notify action triggers at least 7 days before expiry; one action of each type. Rotation
makes a new version at the trigger time, expiring `expiryTime` later when the policy sets it.
A key without a policy of its own answers the default one: notify 30 days before expiry.
Key Vault answers a broken rule with 400 BadParameter."""

from __future__ import annotations

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


def checked_rotation_policy(
    body: dict[str, Any], old: dict[str, Any] | None, now: float
) -> dict[str, Any]:
    """The policy to store (stamped `now`), or 400 for a rule it breaks."""
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
        if kind == "rotate" and before is not None and expiry is None:
            raise HttpError(
                400, "BadParameter", "A Rotate timeBeforeExpiry needs the policy's expiryTime."
            )
        if kind == "rotate" and expiry is not None:
            total = days(expiry, "expiryTime")
            at = (
                days(after, "timeAfterCreate")
                if after is not None
                else total - days(str(before), "timeBeforeExpiry")
            )
            if not MIN_TRIGGER_DAYS <= at <= total - MIN_TRIGGER_DAYS:
                raise HttpError(
                    400,
                    "BadParameter",
                    f"The Rotate trigger must fall at least {MIN_TRIGGER_DAYS} days after "
                    f"creation and {MIN_TRIGGER_DAYS} days before the expiry time ({expiry}).",
                )
    now = int(now)
    created = ((old or {}).get("attributes") or {}).get("created") or now
    return {
        "lifetimeActions": body.get("lifetimeActions") or [],
        "attributes": {"expiryTime": expiry, "created": created, "updated": now},
    }


def next_rotation(policy: dict[str, Any] | None, created: float, exp: float | None) -> float | None:
    """When the policy's Rotate action makes the next version after the latest one (created
    at `created`, expiring at `exp`), or None when it never does."""
    for action in (policy or {}).get("lifetimeActions") or []:
        if str((action.get("action") or {}).get("type", "")).lower() != "rotate":
            continue
        trigger = action.get("trigger") or {}
        if trigger.get("timeAfterCreate"):
            return created + days(trigger["timeAfterCreate"], "timeAfterCreate") * 86400
        if trigger.get("timeBeforeExpiry") and exp:
            due = exp - days(trigger["timeBeforeExpiry"], "timeBeforeExpiry") * 86400
            return max(due, created + 1)
    return None


def expiry_of(policy: dict[str, Any] | None, created: float) -> int | None:
    """The `exp` the policy gives a version it rotates in at `created`."""
    expiry = ((policy or {}).get("attributes") or {}).get("expiryTime")
    return int(created + days(expiry, "expiryTime") * 86400) if expiry else None
