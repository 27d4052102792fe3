"""Fleet key rotation: every selected customer key gets one new version, and every disk
encryption set and registry that uses it moves to that version, verified.

1. Check the task runner (a Dask scheduler must answer) before anything else; then a local
   Dask cluster starts, beside steps 2-5.
2. Find the subscriptions and discover the sets, registries, clusters and key stores
   (Resource Graph).
3. Select the keys: those named, or every key a set, registry or KMS cluster uses; by vault
   and tags.
4. Read each key's latest version; plan: due by age or expiry, a new version or the one
   this rotation (or a rotation policy) already made; KMS clusters the two-slot rule stops
   are held back (rows); plan_only publishes the plan and stops.
5. Rotate each key once (tagged with the rotation id: a re-run reuses the version), their
   run locks under one lease, on the flow's own threads.
6. Move each dependent (in one share per Dask worker): update a set or registry pinned
   to a version, or wait for one that follows the latest version to pick it up; verify it
   reports the new version. A KMS cluster gets the version and every Secret re-written,
   verified none is left behind.
7. IBM Cloud (`ibm_accounts`): each account's root keys and images read; per selected
   root key, rotate (at most once per hour; not again while images are behind its latest
   version), rewrap and record each classic image's wrapped DEK, verify VPC re-wrapped its
   images.
8. Publish one row per key and dependent; the run fails naming each failed row."""

from __future__ import annotations

from prefect import flow
from prefect.utilities.annotations import quote

from blocks.azure import AzureCredentials
from byok.parameters import parse_request
from byok.rotation import ROTATION_TYPES, FleetRotationRequest, FleetRotationResult, shares
from byok.rotation_ibm import IbmRotationPlan
from tasks.fleet_rotation import (
    check_complete,
    check_kms_clusters,
    move_dependents,
    plan_keys,
    publish_rotation,
    read_key_facts,
    rotate_keys,
    select_keys,
)
from tasks.fleet_rotation_ibm import plan_ibm_keys, rotate_ibm_key
from tasks.inventory import discover_resources, readable_subscriptions
from tasks.refusal import refuse_quietly
from tasks.task_runners import FleetRunner, check_task_runner


@flow(name="rotate-customer-keys", validate_parameters=False)
@refuse_quietly
def rotate_customer_keys(
    request: FleetRotationRequest, credentials: AzureCredentials | None = None
) -> FleetRotationResult:
    """Select → plan → (plan_only: publish the plan) → rotate keys → move and verify
    dependents → publish the rows.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(FleetRotationRequest, request)
    check_task_runner(request)
    # a local Dask cluster starts beside the planning and the keys, and closes beside the
    # publishing
    with FleetRunner(request) as runner:
        credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
        subscriptions, _ = readable_subscriptions(credentials, request.subscriptions)
        # only the dependents' and the key stores' rows: 0.3-0.4 s for a fleet of 6,666
        # resources, where all of them took 2.3 s (measured); quote(): the rows handed on as
        # they are (Prefect would visit every row and dependent on each hand-off)
        rows = discover_resources(credentials, subscriptions, True, ROTATION_TYPES)
        candidates = select_keys(quote(rows), request)
        facts = read_key_facts(credentials, list(candidates))
        planned = plan_keys(quote(candidates), facts, request)
        plan = check_kms_clusters(credentials, quote(planned), request)
        ibm = plan_ibm_keys(request) if request.ibm_accounts else IbmRotationPlan()
        if request.plan_only:
            return publish_rotation(quote(plan), quote(plan.rows() + ibm.rows()), True)
        wait, policy = request.wait_for_other_run, request.rotation_policy
        # the keys, on this run's threads (one write each, not worth a trip to Dask)
        rotating = rotate_keys.submit(
            credentials, quote(plan.rotations), plan.rotation_id, wait, policy
        )
        with runner.tasks(plan.concurrency(request)) as (count, threads):
            # each IBM root key with its images, and every dependent, the subscriptions in
            # turn, in shares (one per Dask worker)
            roots = [rotate_ibm_key.submit(k, request) for k in ibm.rotations]
            keys = rotating.result()
            moving = [
                move_dependents.submit(
                    credentials, share, plan.rotation_id, request, number, threads
                )
                for number, share in enumerate(shares(plan.moves(keys), count), 1)
            ]
            moved = [row for f in moving for row in f.result()]
            done = keys + moved + [row for f in roots for row in f.result()]
        result = publish_rotation(quote(plan), quote(plan.skipped + ibm.skipped + done), False)
    return check_complete(quote(result))
