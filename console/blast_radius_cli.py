"""`byok blast-radius KEY`: what a key protects, each dependent on one line as its path from
the key (runs the `key-blast-radius` flow against saved credentials blocks)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from byok.errors import ByokError
from byok.outcomes import applied


def register(subparsers: Any) -> None:
    """Add `byok blast-radius`."""
    parser = subparsers.add_parser(
        "blast-radius",
        help="list what a key protects before you disable or delete it",
        description="List everything a Key Vault key or Key Protect root key protects, with "
        "the path from the key to it (key -> set -> disk -> VM, root key -> wrapped DEK -> "
        "image template, ...).",
    )
    parser.add_argument(
        "key",
        help="Key Vault key id https://<vault>/keys/<name>[/<version>], or Key Protect key id "
        "or CRN",
    )
    parser.add_argument(
        "--azure-block", metavar="NAME", help="saved 'BYOK Azure Credentials' block (Key Vault)"
    )
    parser.add_argument(
        "--subscription",
        metavar="ID",
        action="append",
        default=[],
        help="subscription to look in (repeatable; default every visible one)",
    )
    parser.add_argument(
        "--ibm-block", metavar="NAME", help="saved 'BYOK IBM Cloud Credentials' block"
    )
    parser.add_argument(
        "--key-protect-instance",
        metavar="GUID",
        action="append",
        default=[],
        help="Key Protect instance to read (repeatable)",
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=[],
        help="COS bucket to look for encrypted images in (repeatable; default every bucket)",
    )
    parser.add_argument("--cos-instance", metavar="GUID", help="COS instance (IAM access)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from byok.inventory.request import BlastRadiusRequest, IbmAccountScope
    from flows.blast_radius import key_blast_radius

    accounts = []
    if args.ibm_block:
        accounts.append(
            IbmAccountScope(
                ibm_credentials_block=args.ibm_block,
                key_protect_instances=args.key_protect_instance,
                cos_instance_id=args.cos_instance,
                buckets=args.bucket,
            )
        )
    try:
        request = BlastRadiusRequest(
            key_id=args.key,
            azure_credentials_block=args.azure_block,
            subscriptions=args.subscription,
            ibm_accounts=accounts,
        )
        result = applied(key_blast_radius(request))
    except (ByokError, ValueError) as exc:
        print(f"byok blast-radius: {exc}", file=sys.stderr)
        return 2
    for dependent in result.dependents:
        print(" -> ".join(dependent.path))
    print(f"{len(result.dependents)} dependents of {result.key_id}", file=sys.stderr)
    return 0
