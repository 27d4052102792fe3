"""`byok emulator`: run the local cloud emulator, and drive a running one (faults, reset,
request log) through its admin API."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import ssl
import sys
import threading
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from console import throttle_cli
from console.az_env import az_env_lines
from emulator.faults import FAULT_KINDS
from emulator.files import write_private
from emulator.throttling import Limit

DEFAULT_STATE_DIR = Path(os.environ.get("BYOK_EMULATOR_DIR", Path.home() / ".byok" / "emulator"))
ENDPOINTS_FILE = "endpoints.json"
AZ_ENV_FILE = "az-env.sh"
AZ_CONFIG_DIR = "azure-cli"


def register(subparsers: Any) -> None:
    """Add `byok emulator` and its sub-commands."""
    parser = subparsers.add_parser(
        "emulator",
        help="run the local cloud emulator or drive a running one",
        description="Run the local cloud emulator (Entra ID, ARM, Key Vault) on loopback over "
        "HTTPS, or drive a running one.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the CA and endpoints.json live (default {DEFAULT_STATE_DIR})",
    )
    parser.set_defaults(
        func=_serve,
        port=0,
        save_block=None,
        save_ibm_block=None,
        throttle=False,
        subscriptions=1,
        ibm_accounts=1,
    )
    commands = parser.add_subparsers(dest="emulator_command")

    serve = commands.add_parser("serve", help="run the emulator until interrupted (default)")
    serve.add_argument("--port", type=int, default=0, help="main port (default: any free one)")
    serve.add_argument(
        "--save-block",
        metavar="NAME",
        default=None,
        help="save a 'BYOK Azure Credentials' block NAME pointing at the emulator "
        "in the current Prefect API",
    )
    serve.add_argument(
        "--save-ibm-block",
        metavar="NAME",
        default=None,
        help="save a 'BYOK IBM Cloud Credentials' block NAME pointing at the emulator "
        "in the current Prefect API",
    )
    serve.add_argument(
        "--throttle",
        action="store_true",
        help="throttle ARM as Azure does (token buckets per subscription, principal and "
        "operation kind; off by default)",
    )
    for kind, default in (("reads", "250/25"), ("writes", "200/10"), ("deletes", "200/10")):
        serve.add_argument(
            f"--throttle-{kind}",
            type=Limit.parse,
            default=Limit.parse(default),
            metavar="SIZE/RATE",
            help=f"{kind} bucket size and refill per second with --throttle (default {default})",
        )
    serve.add_argument(
        "--subscriptions",
        type=_positive,
        default=1,
        metavar="N",
        help="subscriptions of the home tenant, the default one included (default 1)",
    )
    serve.add_argument(
        "--ibm-accounts",
        type=_positive,
        default=1,
        metavar="N",
        help="IBM Cloud accounts, the seeded one included (default 1); with --save-ibm-block "
        "NAME, the others' blocks are NAME-2 … NAME-N",
    )
    serve.set_defaults(func=_serve)

    seed = commands.add_parser(
        "seed",
        help="make a realistic fleet in the running emulator (vaults, keys, disk encryption "
        "sets, disks, registries; some compliant, some not); re-running makes nothing twice",
    )
    seed.add_argument("--subscriptions", type=_positive, default=1, metavar="N")
    seed.add_argument("--resources", type=_positive, default=100, metavar="M")
    seed.add_argument("--region", default="westeurope")
    seed.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    seed.set_defaults(func=_seed)

    commands.add_parser(
        "endpoints", help="print the running emulator's endpoints as JSON"
    ).set_defaults(func=_endpoints)
    az_env = commands.add_parser(
        "az-env",
        help="write the lines that point a private Azure CLI configuration at the running "
        "emulator to FILE (then `source FILE`)",
    )
    az_env.add_argument("file", type=Path, help="file to write ('-' prints them)")
    az_env.set_defaults(func=_az_env)
    commands.add_parser(
        "reset", help="forget every resource, fault and logged request"
    ).set_defaults(func=lambda a: _admin(a, "POST", "/reset"))

    fault = commands.add_parser("fault", help="inject faults").add_subparsers(
        dest="fault_command", required=True
    )
    add = fault.add_parser("add", help="add a fault rule")
    add.add_argument("kind", choices=FAULT_KINDS)
    add.add_argument("--method", help="HTTP method to match (default any)")
    add.add_argument("--path", type=_regex, default=".*", help="regex searched in the request path")
    add.add_argument(
        "--status", type=int, default=503, help="status to answer (status, status-after)"
    )
    add.add_argument("--retry-after", type=float, help="Retry-After seconds (kind status)")
    add.add_argument(
        "--seconds", type=float, default=0.0, help="latency, LRO duration or effect delay"
    )
    add.add_argument("--polls", type=int, default=1, help="polls before an LRO ends (lro-slow)")
    add.add_argument(
        "--effect", help="effect name (delayed-effect): access-grant, principal-visible"
    )
    add.add_argument("--count", type=int, default=1, help="times it fires; 0 = until cleared")
    add.set_defaults(func=_fault_add)
    fault.add_parser("list", help="list the fault rules").set_defaults(
        func=lambda a: _admin(a, "GET", "/faults")
    )
    fault.add_parser("clear", help="remove every fault rule").set_defaults(
        func=lambda a: _admin(a, "DELETE", "/faults")
    )

    log = commands.add_parser("requests", help="print the request log as JSON lines")
    log.add_argument("--method")
    log.add_argument("--path", type=_regex, help="regex searched in the path")
    log.add_argument("--origin", choices=("main", "vault", "cos"), help="where it arrived")
    log.set_defaults(func=_requests)
    throttle_cli.register(commands, _call)


def claim(state_dir: Path) -> None:
    """Refuse to start a second emulator over one that still answers from `state_dir` (its
    CA would be overwritten); a stale endpoints.json is ignored."""
    path = state_dir / ENDPOINTS_FILE
    if not path.exists():
        return
    try:
        endpoints = json.loads(path.read_text())
        context = ssl.create_default_context(cafile=endpoints["ca_bundle"])
        with urllib.request.urlopen(
            endpoints["authority"] + "/_emulator/endpoints", context=context, timeout=2
        ):
            pass
    except urllib.error.HTTPError:
        pass  # it answered
    except (OSError, ValueError, KeyError):
        return
    raise SystemExit(
        f"byok: an emulator is already running from {state_dir}; stop it, or point "
        "BYOK_EMULATOR_DIR (or --state-dir) elsewhere"
    )


def publish(emulator: Any, state_dir: Path) -> dict[str, str]:
    """Make a started emulator the one `byok emulator …` drives: its endpoints (with its
    test secrets) and the az-env lines, both 0600, in `state_dir`; returns the endpoints."""
    endpoints = {
        **emulator.endpoints(),
        "client_secret": emulator.identity.client_secret,
        "ibm_api_key": emulator.ibm_identity.api_key,
        "admin_token": emulator.admin_token,
    }
    write_private(state_dir / ENDPOINTS_FILE, json.dumps(endpoints, indent=2).encode())
    lines = az_env_lines(endpoints, endpoints["client_secret"], state_dir.resolve() / AZ_CONFIG_DIR)
    write_private(state_dir / AZ_ENV_FILE, ("\n".join(lines) + "\n").encode())
    return endpoints


def retract(state_dir: Path) -> None:
    """Undo `publish` when the emulator stops."""
    for name in (ENDPOINTS_FILE, AZ_ENV_FILE):
        (state_dir / name).unlink(missing_ok=True)


def az_env_hint(state_dir: Path) -> str:
    """The line that points the Azure CLI at the published emulator."""
    return f"Azure CLI (bash): source {state_dir.resolve() / AZ_ENV_FILE}"


def _serve(args: argparse.Namespace) -> int:
    from emulator.server import Emulator
    from emulator.throttling import Limits

    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    claim(state_dir)
    limits = (
        Limits(args.throttle_reads, args.throttle_writes, args.throttle_deletes)
        if args.throttle
        else None
    )
    emulator = Emulator(
        port=args.port,
        state_dir=state_dir,
        throttle=limits,
        subscriptions=args.subscriptions,
        ibm_accounts=args.ibm_accounts,
    ).start()
    endpoints = publish(emulator, state_dir)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        _save_blocks(emulator, args)
        print(describe(endpoints), az_env_hint(state_dir), sep="\n", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        retract(state_dir)
        signal.signal(signal.SIGTERM, previous)
    return 0


def _save_blocks(emulator: Any, args: argparse.Namespace) -> None:
    """The credential blocks asked for, saved in the current Prefect API (a clear error, not a
    traceback, when no Prefect server answers)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    from console.emulator_blocks import save_emulator_block, save_emulator_ibm_block

    wanted: list[tuple[str, Callable[[], object]]] = []
    if args.save_block:
        wanted.append((args.save_block, partial(save_emulator_block, emulator, args.save_block)))
    if args.save_ibm_block:
        accounts = [None, *emulator.other_ibm_identities]
        for number, account in enumerate(accounts, start=1):
            name = args.save_ibm_block + (f"-{number}" if number > 1 else "")
            wanted.append((name, partial(save_emulator_ibm_block, emulator, name, account)))
    for name, save in wanted:
        try:
            save()
        except httpx.HTTPError as exc:
            raise SystemExit(
                f"byok emulator: cannot save the block {name!r}: the Prefect API at "
                f"{PREFECT_API_URL.value() or '(ephemeral)'} did not answer ({exc}); start "
                "`prefect server start` or set PREFECT_API_URL, or serve without --save-*"
            ) from None


def describe(endpoints: dict[str, str]) -> str:
    """What a user needs to point clients at the emulator (its own, public, test secrets)."""
    return "\n".join(
        [
            "byok cloud emulator running (Ctrl-C stops it)",
            "Azure",
            f"  Resource Manager  {endpoints['arm']}",
            f"  Entra authority   {endpoints['authority']}  (tenant {endpoints['tenant_id']})",
            f"  subscription      {endpoints['subscription_id']}",
            f"  client id/secret  {endpoints['client_id']} / {endpoints['client_secret']}",
            "  Key Vault         one origin per vault: see each vault's properties.vaultUri",
            "IBM Cloud",
            f"  IAM, Key Protect  {endpoints['ibm_iam']}  (instance "
            f"{endpoints['ibm_key_protect_instance']})",
            f"  SoftLayer API     {endpoints['ibm_softlayer']}",
            f"  COS (S3, HMAC)    {endpoints['ibm_cos']}  (key id "
            f"{endpoints['ibm_cos_hmac_access_key_id']})",
            f"  account / API key {endpoints['ibm_account_id']} / {endpoints['ibm_api_key']}",
            *_other_ibm_accounts(endpoints),
            f"CA bundle           {endpoints['ca_bundle']}",
            f"admin API token     {endpoints['admin_token']}  (byok emulator fault|reset|"
            "requests|throttle send it)",
        ]
    )


def _other_ibm_accounts(endpoints: dict[str, str]) -> list[str]:
    """A line per IBM account besides the seeded one (their API keys: in the blocks that
    --save-ibm-block saves)."""
    accounts = endpoints.get("ibm_other_account_ids")
    if not accounts:
        return []
    instances = endpoints["ibm_other_key_protect_instances"].split(",")
    return [
        f"  other account     {account}  (Key Protect instance {instance})"
        for account, instance in zip(accounts.split(","), instances, strict=True)
    ]


def _running(args: argparse.Namespace) -> dict[str, str]:
    path = args.state_dir / ENDPOINTS_FILE
    if not path.exists():
        raise SystemExit(
            f"byok emulator: no running emulator ({path} does not exist); "
            "start one with `byok emulator serve`"
        )
    return json.loads(path.read_text())


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    endpoints = _running(args)
    context = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        endpoints["authority"] + "/_emulator" + path,
        data=data,
        method=method,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {endpoints.get('admin_token', '')}",
        },
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"byok emulator: {exc.code} {exc.read().decode()}") from exc
    except OSError as exc:
        raise SystemExit(f"byok emulator: cannot reach the emulator: {exc}") from exc
    return json.loads(payload) if payload else None


def _print(text: str) -> None:
    """Write `text` to stdout; a reader that went away (`| head`) ends the command quietly,
    as https://docs.python.org/3/library/signal.html#note-on-sigpipe does it."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        raise SystemExit(1) from None


def _admin(args: argparse.Namespace, method: str, path: str) -> int:
    result = _call(args, method, path)
    if result is not None:
        _print(json.dumps(result, indent=2) + "\n")
    return 0


def _endpoints(args: argparse.Namespace) -> int:
    _print(json.dumps(_running(args), indent=2) + "\n")
    return 0


def _az_env(args: argparse.Namespace) -> int:
    endpoints = _running(args)
    lines = az_env_lines(
        endpoints, endpoints["client_secret"], args.state_dir.resolve() / AZ_CONFIG_DIR
    )
    text = "\n".join(lines) + "\n"
    if str(args.file) == "-":
        _print(text)
    else:
        write_private(args.file, text.encode())  # it holds the emulator's client secret
    return 0


def _regex(text: str) -> str:
    """A --path argument: a regular expression, checked here rather than by the emulator."""
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a regular expression ({exc})"
        ) from None
    return text


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def _seed(args: argparse.Namespace) -> int:
    from blocks.azure import AzureCredentials
    from console.fleet_seed import seed_fleet

    endpoints = _running(args)
    subscriptions = _call(args, "POST", "/subscriptions", {"count": args.subscriptions})
    block = AzureCredentials(
        tenant_id=endpoints["tenant_id"],
        client_id=endpoints["client_id"],
        client_secret=endpoints["client_secret"],
        subscription_id=endpoints["subscription_id"],
        cloud="Custom",
        resource_manager_url=endpoints["arm"],
        authority_host=endpoints["authority"],
        verify_keyvault_challenge_resource=False,
        ca_bundle=endpoints["ca_bundle"],
        polling_interval_seconds=0.01,
    )
    fleet = seed_fleet(
        block,
        subscriptions=subscriptions["subscriptions"],
        resources=args.resources,
        region=args.region,
        seed=args.seed,
    )
    counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(fleet.counts.items()))
    print(
        f"fleet of {fleet.resources} resources in {len(fleet.subscriptions)} subscriptions "
        f"({counts}); {fleet.created} made now"
    )
    return 0


def _fault_add(args: argparse.Namespace) -> int:
    body = {
        "kind": args.kind,
        "method": args.method,
        "path": args.path,
        "status": args.status,
        "retry_after": args.retry_after,
        "seconds": args.seconds,
        "polls": args.polls,
        "effect": args.effect,
        "count": args.count or None,
    }
    _print(json.dumps(_call(args, "POST", "/faults", body), indent=2) + "\n")
    return 0


def _requests(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode(
        {
            k: v
            for k, v in (("method", args.method), ("path", args.path), ("origin", args.origin))
            if v
        }
    )
    entries = _call(args, "GET", "/requests" + (f"?{query}" if query else ""))
    _print("".join(json.dumps(entry) + "\n" for entry in entries))
    return 0
