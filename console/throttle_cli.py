"""`byok emulator throttle on|off|show`: switch ARM's throttling (and Microsoft.Compute's
virtual machine buckets) on or off in the running emulator, through its admin API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from emulator.throttling import Limit

Call = Callable[[argparse.Namespace, str, str, Any], Any]


def register(commands: Any, call: Call) -> None:
    """Add `throttle` to `byok emulator`'s sub-commands; `call(args, method, path, body)`
    reaches the running emulator's admin API."""
    parser = commands.add_parser(
        "throttle",
        help="throttle ARM as Azure does (token buckets per subscription, principal and "
        "operation kind, plus Compute's VM policies) in the running emulator, or stop",
    )
    parser.add_argument("state", choices=("on", "off", "show"))
    for kind, default in (("reads", "250/25"), ("writes", "200/10"), ("deletes", "200/10")):
        parser.add_argument(
            f"--{kind}",
            type=Limit.parse,
            metavar="SIZE/RATE",
            help=f"{kind} bucket size and refill per second (default {default})",
        )
    parser.add_argument(
        "--no-compute", action="store_true", help="without Microsoft.Compute's own buckets"
    )
    parser.set_defaults(func=lambda args: _throttle(args, call))


def _throttle(args: argparse.Namespace, call: Call) -> int:
    if args.state == "show":
        answer = call(args, "GET", "/throttle", None)
    else:
        body: dict[str, Any] = {"enabled": args.state == "on", "compute": not args.no_compute}
        for kind in ("reads", "writes", "deletes"):
            limit = getattr(args, kind)
            if limit is not None and args.state == "on":
                body[kind] = f"{limit.size:g}/{limit.rate:g}"
        answer = call(args, "POST", "/throttle", body)
    print(json.dumps(answer["throttle"], indent=2))
    return 0
