"""`/_emulator/throttle`: switch ARM's, Compute's and Key Vault's throttling on or off in a
running emulator (`byok emulator throttle on|off`). GET shows the limits in force (null: off); POST
{"enabled": bool, "reads"/"writes"/"deletes": "SIZE/RATE", "compute": bool} sets them, fresh
buckets, for this state and every reset after it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulator.http import HttpError, Request, Response
from emulator.throttling import KINDS, Limit, Limits, Throttle

if TYPE_CHECKING:
    from emulator.server import Emulator

THROTTLE_ADMIN = "/_emulator/throttle"


def describe(limits: Limits | None) -> dict[str, Any] | None:
    """The limits as the admin API shows them."""
    if limits is None:
        return None
    shown: dict[str, Any] = {
        kind: f"{getattr(limits, kind).size:g}/{getattr(limits, kind).rate:g}" for kind in KINDS
    }
    shown["compute"] = [p.name for p in limits.compute]
    return shown


def parse(body: dict[str, Any]) -> Limits | None:
    """The limits a POST body asks for (None: off)."""
    if not isinstance(body, dict):
        raise ValueError(f"body = {body!r}: expected a JSON object")
    unknown = sorted(set(body) - {"enabled", *KINDS, "compute"})
    if unknown:
        raise ValueError(f"{unknown[0]}: not a throttle setting")
    if not isinstance(body.get("enabled"), bool):
        raise ValueError(f"enabled = {body.get('enabled')!r}: expected true or false")
    if not body["enabled"]:
        return None
    default = Limits()
    reads, writes, deletes = (
        Limit.parse(str(body[kind])) if kind in body else getattr(default, kind) for kind in KINDS
    )
    compute = default.compute if body.get("compute", True) else ()
    return Limits(reads, writes, deletes, compute)


def throttle_admin(emulator: Emulator, request: Request) -> Response:
    """Serve the throttle admin route."""
    if request.method == "POST":
        try:
            limits = parse(request.json())
        except HttpError as exc:
            return exc.response()
        except ValueError as exc:
            return HttpError(400, "BadRequest", str(exc)).response()
        emulator.limits = limits
        emulator.throttle = Throttle(limits) if limits else None
    elif request.method != "GET":
        return HttpError(405, "MethodNotAllowed", f"{request.method} {THROTTLE_ADMIN}").response()
    throttle = emulator.throttle
    return Response(200, {"throttle": describe(throttle.limits if throttle else None)})
