"""Fleet rotation steps: pick the keys, read their latest versions, plan (holding back KMS
clusters the two-slot rule stops), make (or reuse) one new version per key, move every disk
encryption set, registry and KMS cluster (its Secrets re-written) to it and verify, then
publish one row per key and dependent."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from contextvars import copy_context
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from blocks.azure import AzureCredentials
from byok.acr_models import registry_key_state
from byok.aks_kms import RotateKmsRequest, rotated_kms
from byok.aks_models import cluster_id
from byok.azure_errors import one_line
from byok.disk_encryption_set_models import des_key_state
from byok.errors import RotationIncomplete
from byok.key_policy import RotationPolicySpec
from byok.keyvault_ids import KeyId
from byok.retrying import retry_while
from byok.rotation import (
    KEY_THREADS,
    Dependent,
    DependentKind,
    FleetRotationRequest,
    FleetRotationResult,
    KeyFacts,
    PlannedKey,
    RotationPlan,
    RotationRow,
    Share,
    Status,
    candidate_keys,
    default_rotation_id,
    hold_clusters,
    moved_row,
    plan_rotation,
)
from clients.azure import AzureClients
from clients.disk_encryption_sets import patch_des_key
from clients.fleet_pickups import DONE, Pickups, is_pickup
from clients.registries import set_registry_key
from tasks.aks_kms import apply_kms, rewrite_secrets, validate_rotation, verify_kms
from tasks.events import emit_byok_event
from tasks.in_memory import IN_MEMORY
from tasks.key_vault import ensure_rotation_policy, new_key_version
from tasks.retry import STEP_RETRIES, is_transient
from tasks.run_lock import resource_lock, resource_locks

READERS = 16  # concurrent key reads
# beyond a dependent's pickup wait: the time left to move it again after a transient failure
MOVE_RETRY_SECONDS = 60


@task(name="Select the keys", **IN_MEMORY)
def select_keys(
    rows: list[dict[str, Any]], request: FleetRotationRequest
) -> dict[str, list[Dependent]]:
    """The keys the selection names (or every key a set or registry uses), by vault, with
    the disk encryption sets and registries that use each."""
    return candidate_keys(rows, request)


@task(name="Read the keys", **STEP_RETRIES, **IN_MEMORY)
def read_key_facts(credentials: AzureCredentials, key_ids: list[str]) -> dict[str, KeyFacts]:
    """Each key's latest version (created, expiry, enabled, tags), by lower-cased
    versionless id; a key these credentials cannot read gets the reason instead."""
    clients = AzureClients.of(credentials)

    def read(key_id: str) -> KeyFacts:
        kid = KeyId.parse(key_id)
        try:
            props = clients.keys(kid.vault_url).get_key(kid.name).properties
        except HttpResponseError as exc:
            return KeyFacts(key_id=key_id, error=f"cannot read the key: {one_line(exc)}")
        return KeyFacts(
            key_id=key_id,
            latest=str(props.id),
            created=props.created_on,
            expires=props.expires_on,
            enabled=props.enabled is not False,
            tags=dict(props.tags or {}),
        )

    with ThreadPoolExecutor(READERS) as pool:
        return {f.key_id.lower(): f for f in pool.map(read, key_ids)}


@task(name="Plan the rotation", **IN_MEMORY)
def plan_keys(
    candidates: dict[str, list[Dependent]],
    facts: dict[str, KeyFacts],
    request: FleetRotationRequest,
) -> RotationPlan:
    """Which keys rotate (a new version, or the one this rotation or a policy already made)
    and what each dependent does; the rest as skipped rows with the reason."""
    started = flow_run.scheduled_start_time or datetime.now(UTC)
    rotation_id = request.rotation_id or default_rotation_id(request, started)
    plan = plan_rotation(candidates, facts, request, rotation_id, datetime.now(UTC))
    get_run_logger().info(
        "Rotation %s: %d keys to rotate, %d dependents, %d keys left alone",
        rotation_id,
        len(plan.rotations),
        sum(len(k.dependents) for k in plan.rotations),
        len(plan.skipped),
    )
    return plan


def _kms_request(
    request: FleetRotationRequest, cluster: Dependent, rotation_id: str
) -> RotateKmsRequest:
    """What rotate-aks-kms-key would be asked for this cluster (its default Secret pace)."""
    return RotateKmsRequest(
        azure_credentials_block=request.azure_credentials_block,
        subscription_id=cluster.subscription_id,
        resource_group=cluster.resource_group,
        cluster_name=cluster.name,
        rotation_id=rotation_id,
        wait_for_other_run=request.wait_for_other_run,
    )


@task(name="Check the KMS clusters", **IN_MEMORY)
def check_kms_clusters(
    credentials: AzureCredentials, plan: RotationPlan, request: FleetRotationRequest
) -> RotationPlan:
    """The plan without the KMS clusters that may not rotate now (rotate-aks-kms-key's check:
    KMS set by this tool, no Secret still needing the previous version unless this rotation
    is the one in progress), each a failed row with the reason; read only."""
    refused: dict[str, str] = {}
    for key in plan.rotations:
        for cluster in key.dependents:
            if cluster.kind != DependentKind.AKS_CLUSTER:
                continue
            try:
                asked = _kms_request(request, cluster, plan.rotation_id)
                validate_rotation(credentials, asked, plan.rotation_id)
            except Exception as exc:  # this cluster's refusal is its row; the others go on
                refused[cluster.resource_id] = one_line(exc)
    return hold_clusters(plan, refused)


def _move_cluster(
    credentials: AzureCredentials,
    cluster: Dependent,
    version: str,
    rotation_id: str,
    request: FleetRotationRequest,
) -> int:
    """rotate-aks-kms-key's steps with the fleet's new version: one run per cluster, the
    two-slot check, the cluster on `version`, every Secret re-written, none left on an older
    version. Returns how many Secrets were re-written."""
    asked = _kms_request(request, cluster, rotation_id)
    sub, rg, name = cluster.subscription_id, cluster.resource_group, cluster.name
    page, pace = asked.secrets_page_size, asked.secrets_per_second
    with resource_lock(cluster_id(sub, rg, name), wait=asked.wait_for_other_run):
        tags, kms = validate_rotation(credentials, asked, rotation_id)
        kms = rotated_kms(kms, version)
        tags = apply_kms(credentials, sub, rg, name, None, kms, version, rotation_id)
        written = rewrite_secrets(credentials, sub, rg, name, tags, page, pace)
        verify_kms(credentials, sub, rg, name, kms["keyId"], page)
    return written


@task(name="Rotate the keys", **IN_MEMORY)
def rotate_keys(
    credentials: AzureCredentials,
    keys: list[PlannedKey],
    rotation_id: str,
    wait: bool,
    policy: RotationPolicySpec | None,
) -> list[RotationRow]:
    """Each key once, `KEY_THREADS` at a time, each in a copy of this run's context (its
    logger), one row each. The run locks of the keys that get a new version are taken under
    one lease (`resource_locks`); when another run holds one of them, each key takes its own,
    and only the held one waits or fails."""
    making = [key.key_id for key in keys if key.make_version]
    with resource_locks(making) as locked, ThreadPoolExecutor(KEY_THREADS) as pool:
        rotating = [
            pool.submit(
                copy_context().run, rotate_key, credentials, key, rotation_id, wait, policy, locked
            )
            for key in keys
        ]
        return [f.result() for f in rotating]


def rotate_key(
    credentials: AzureCredentials,
    key: PlannedKey,
    rotation_id: str,
    wait: bool,
    policy: RotationPolicySpec | None,
    locked: bool,
) -> RotationRow:
    """One new version per rotation (tagged with it; a re-run reuses it), made by one run at
    a time (`locked`: this run holds the key's lock already), and the key's rotation policy
    when one is asked for; a failure is this key's row, not the run's end."""
    made = key.latest
    action = "new version" if key.make_version else "reuse version"
    try:
        if key.make_version:
            with nullcontext() if locked else resource_lock(key.key_id, wait=wait):
                made = new_key_version(credentials, None, key.latest, rotation_id)
        if policy is not None:
            ensure_rotation_policy(credentials, None, key.key_id, policy)
            action += ", rotation policy"
    except Exception as exc:  # one key's failure is its row; the others go on
        return RotationRow(
            key_id=key.key_id, action=action, status=Status.FAILED, reason=one_line(exc)
        )
    return RotationRow(
        key_id=key.key_id, action=action, status=Status.ROTATED, version=made, reason=key.reason
    )


def _move(
    credentials: AzureCredentials,
    dependent: Dependent,
    version: str,
    rotation_id: str,
    request: FleetRotationRequest,
) -> str | None:
    """One dependent pinned to a version (or a KMS cluster) updated to `version` (every step
    get-or-set: safe to run again); the row's note, or None when the set or registry does
    not report the version done yet (`Pickups` waits for it)."""
    sub, rg, name = dependent.subscription_id, dependent.resource_group, dependent.name
    if dependent.kind == DependentKind.AKS_CLUSTER:
        written = _move_cluster(credentials, dependent, version, rotation_id, request)
        return f"{written} Secret(s) re-written"
    clients = AzureClients.of(credentials, sub)
    # what the update's own read returned decides (no read more); no log line per step:
    # the rows are the record
    if dependent.kind == DependentKind.DISK_ENCRYPTION_SET:
        if dependent.key_url == version:  # a re-run: moved already, maybe re-wrapping
            return None
        des = patch_des_key(clients, rg, name, version)
        return "" if des_key_state(des, version) in DONE else None
    # with the identity it uses (None: read it)
    registry, _ = set_registry_key(clients, rg, name, version, dependent.identity, 900)
    return "" if registry_key_state(registry, version) in DONE else None


def move_dependent(
    credentials: AzureCredentials,
    dependent: Dependent,
    key: RotationRow,
    rotation_id: str,
    request: FleetRotationRequest,
    pickups: Pickups,
) -> RotationRow | None:
    """Point a set or registry pinned to a version at the key's new version, handing it to
    `pickups` unless it reports that version done at once (None: its row is theirs); a KMS
    cluster gets the version and every Secret re-written, verified none is left on an older
    one.

    Plain calls, not task runs: at fleet scale each task run's Prefect bookkeeping
    (its record and state events, from every worker) costs more than the ARM requests; the
    rows say what happened to each dependent. A transient failure the SDK's own retries did
    not outlast moves the dependent again, as a step's task retries would (at most 3 more
    times, within its pickup wait plus `MOVE_RETRY_SECONDS`); then, like any other failure,
    it is the dependent's failed row."""
    row = moved_row(dependent, key)
    if key.status == Status.FAILED:
        return row.model_copy(update={"status": Status.SKIPPED, "reason": "the key did not rotate"})
    try:
        note = retry_while(
            lambda: _move(credentials, dependent, key.version, rotation_id, request),
            is_transient,
            timeout_seconds=request.pickup_timeout_minutes * 60 + MOVE_RETRY_SECONDS,
            max_attempts=1 + STEP_RETRIES["retries"],
            first_delay=2,
            on_retry=lambda exc, wait: get_run_logger().info(
                "Moving %s failed (%s); again in %.1f s", dependent.name, one_line(exc), wait
            ),
        )
    except Exception as exc:  # one dependent's failure is its row; the others go on
        return row.model_copy(update={"status": Status.FAILED, "reason": one_line(exc)})
    if note is None:
        pickups.add(dependent, key)
        return None
    return row.model_copy(update={"reason": note})


@task(name="Move a share of the dependents", task_run_name="Move share {number}", **IN_MEMORY)
def move_dependents(
    credentials: AzureCredentials,
    moves: Share,
    rotation_id: str,
    request: FleetRotationRequest,
    number: int,
    threads: int,
) -> list[RotationRow]:
    """One share of the dependents (all of them on the thread runner, a Dask worker's share
    on Dask): those pinned to a version (and KMS clusters) moved `threads` at a time, each in
    a copy of this run's context (its logger), while one more thread waits for the sets and
    registries to report the new version (`Pickups`: those that follow the latest version
    from the start, the others once updated)."""
    pickups = Pickups(credentials, request, [(d, key) for d, key in moves if is_pickup(d, key)])
    with ThreadPoolExecutor(threads + 1) as pool:
        waiting = pool.submit(pickups.wait)
        try:
            moving = [
                None
                if is_pickup(d, key)
                else pool.submit(
                    copy_context().run,
                    move_dependent,
                    credentials,
                    d,
                    key,
                    rotation_id,
                    request,
                    pickups,
                )
                for d, key in moves
            ]
            moved = [None if f is None else f.result() for f in moving]
        finally:
            pickups.close()
        waited = waiting.result()
    return [row or waited[d.resource_id.lower()] for row, (d, _) in zip(moved, moves, strict=True)]


@task(name="Publish the rotation", **IN_MEMORY)
def publish_rotation(
    plan: RotationPlan, rows: list[RotationRow], plan_only: bool
) -> FleetRotationResult:
    """A table artifact of every row (the plan, with plan_only) and a markdown summary; a
    `byok.key.rotated` event per key whose dependents all moved."""
    result = FleetRotationResult(rotation_id=plan.rotation_id, plan_only=plan_only, rows=rows)
    name = "customer-key-rotation-plan" if plan_only else "customer-key-rotation"
    create_table_artifact(
        key=name,
        table=[
            {
                "key": r.key_id,
                "dependent": r.dependent_id,
                "kind": r.kind,
                "action": r.action,
                "status": r.status.value,
                "reason": r.reason,
                "version": r.version.rsplit("/", 1)[-1],  # a Key Vault id's last part
            }
            for r in rows
        ],
        description=f"Rotation {plan.rotation_id}: one row per key and dependent.",
    )
    counts = {s: sum(r.status == s for r in rows) for s in Status}
    create_markdown_artifact(
        key=f"{name}-summary",
        markdown=f"# Rotation {plan.rotation_id}{' (plan only)' if plan_only else ''}\n\n"
        + "\n".join(f"- {s.value}: {n}" for s, n in counts.items() if n),
    )
    if not plan_only:
        for key in plan.rotations:
            mine = [r for r in rows if r.key_id == key.key_id]
            if all(r.status in (Status.ROTATED, Status.VERIFIED) for r in mine):
                emit_byok_event(
                    "key.rotated",
                    key.key_id,
                    "key",
                    related={f"{r.kind}-{i}": r.dependent_id for i, r in enumerate(mine[1:], 1)},
                    payload={"rotation_id": plan.rotation_id, "new_version": mine[0].version},
                )
    return result


@task(name="Check every row", **IN_MEMORY)
def check_complete(result: FleetRotationResult) -> FleetRotationResult:
    """The result, or `RotationIncomplete` naming each failed row."""
    failed = [
        f"{r.dependent_id or r.key_id}: {r.reason}"
        for r in result.rows
        if r.status == Status.FAILED
    ]
    if failed:
        raise RotationIncomplete(failed, len(result.rows))
    return result
