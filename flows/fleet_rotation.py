"""Fleet key rotation: every selected customer key gets one new version, and every disk
encryption set and registry that uses it moves to that version, verified.

1. Check the task runner (a Dask scheduler must answer) before anything else.
2. Find the subscriptions and discover the resources (Resource Graph).
3. Select the keys: those named, or every key a set or registry uses; by vault and tags.
4. Read each key's latest version; plan: due by age or expiry, a new version or the one
   this rotation (or a rotation policy) already made; a dry run publishes the plan and stops.
5. Rotate each key once (tagged with the rotation id: a re-run reuses the version).
6. Move each dependent: update a set or registry pinned to a version, or wait for one that
   follows the latest version to pick it up; verify it reports the new version.
7. Publish one row per key and dependent; the run fails naming each failed row."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.parameters import parse_request
from byok.rotation import FleetRotationRequest, FleetRotationResult, RotationPlan, RotationRow
from tasks.fleet_rotation import (
    check_complete,
    move_dependent,
    plan_keys,
    publish_rotation,
    read_key_facts,
    rotate_key,
    select_keys,
)
from tasks.inventory import discover_resources, readable_subscriptions
from tasks.refusal import refuse_quietly
from tasks.task_runners import check_task_runner, task_runner_for


@flow(name="rotate-customer-keys", validate_parameters=False)
@refuse_quietly
def rotate_customer_keys(request: FleetRotationRequest) -> FleetRotationResult:
    """Select → plan → (dry run: publish the plan) → rotate keys → move and verify
    dependents → publish the rows."""
    request = parse_request(FleetRotationRequest, request)
    check_task_runner(request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    subscriptions, _ = readable_subscriptions(credentials, request.subscriptions)
    rows = discover_resources(credentials, subscriptions, True)
    candidates = select_keys(rows, request)
    facts = read_key_facts(credentials, list(candidates))
    plan = plan_keys(candidates, facts, request)
    if request.dry_run:
        return publish_rotation(plan, plan.rows(), True)
    runner = task_runner_for(request)
    done = apply_rotation_plan.with_options(task_runner=runner)(request, plan)
    return check_complete(publish_rotation(plan, plan.skipped + done, False))


@flow(name="apply-key-rotation-plan", validate_parameters=False)
def apply_rotation_plan(request: FleetRotationRequest, plan: RotationPlan) -> list[RotationRow]:
    """Every key of the plan at once, each dependent as soon as its key has rotated."""
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    wait, timeout = request.wait_for_other_run, request.pickup_timeout_minutes * 60
    policy = request.rotation_policy
    keys = [
        rotate_key.submit(credentials, k, plan.rotation_id, wait, policy) for k in plan.rotations
    ]
    moves = [
        move_dependent.submit(credentials, d, key, timeout, request.poll_seconds)
        for k, key in zip(plan.rotations, keys, strict=True)
        for d in k.dependents
    ]
    return [f.result() for f in keys] + [f.result() for f in moves]
