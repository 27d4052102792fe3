"""Revocation drill for one Key Vault key (issue 17 item 6).

1. Refuse without the confirmation (the key's name), before anything is written.
2. Restore what a crashed run of the drill left revoked (recorded on the key itself).
3. Find the key's dependents (the blast radius); refuse more than `max_dependents`.
4. Revoke: disable every enabled version, or remove the dependents' identities' grants.
5. Prove each dependent reports the failure (VMs stop, registries refuse data operations);
   a VM not running before the drill is reported, not proved.
6. Restore — always, even when a step before failed — and prove each dependent recovers
   (VMs are started again: Azure does not restart them by itself).
7. Publish the evidence record (markdown and a table) and the run's summary, and return the
   record; a dependent that did not fail or recover ends the run Failed, naming it.
`plan_only`: steps 1 and 3 and the dependents' states, then what steps 2 and 4-6 would do
(the versions disabled or grants removed, the dependents proved, the VMs started), nothing
written. Each run is a drill: a second one revokes and restores again."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from blocks.azure import AzureCredentials
from byok.drill import (
    EvidenceRow,
    Method,
    RevocationDrillRequest,
    RevocationDrillResult,
    check_confirmation,
    check_dependents,
    observable,
    targets,
    verdict,
)
from byok.errors import VerificationFailed
from byok.keyvault_ids import KeyId
from byok.outcomes import Plan
from byok.parameters import parse_request
from tasks.inventory import discover_resources, find_dependents, readable_subscriptions
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.revocation import (
    identities_using_key,
    observe_before,
    observe_failure,
    observe_recovery,
    plan_drill,
    publish_evidence,
    restore_key_access,
    revoke_key_access,
)
from tasks.run_lock import resource_lock


@flow(name="revocation-drill", validate_parameters=False)
@refuse_quietly
def revocation_drill(
    request: RevocationDrillRequest, credentials: AzureCredentials | None = None
) -> RevocationDrillResult | Plan:
    """Revoke the key's access, prove every dependent fails, restore, prove it recovers
    (`plan_only`: what it would revoke, prove and restore, nothing written).

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(RevocationDrillRequest, request)
    check_confirmation(request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    key_id = KeyId.parse(request.key_id).versionless
    seconds = request.timeout_minutes * 60
    with resource_lock(key_id, wait=False):
        subscriptions, _ = readable_subscriptions(credentials, request.subscriptions)
        leftover = (
            None
            if request.plan_only
            else restore_key_access.with_options(name="Restore a crashed drill's revocation")(
                credentials, key_id, subscriptions, seconds
            )
        )
        rows = discover_resources(credentials, subscriptions, True)
        dependents = find_dependents(key_id, rows, [])  # a Key Vault key: no IBM account
        found = targets(dependents)
        check_dependents(request, found)
        principals = (
            identities_using_key(credentials, dependents)
            if request.method is Method.REMOVE_GRANT
            else []
        )
        before = [observe_before(credentials, t) for t in found]
        if request.plan_only:
            proved = [t for t, b in zip(found, before, strict=True) if observable(t, b)]
            plan_drill(credentials, key_id, request.method, principals, proved, subscriptions)
            return publish_plan("revocation-drill")
        try:
            revocation = revoke_key_access(
                credentials, key_id, request.method, principals, subscriptions
            )
            revoked_at = revocation.at or datetime.now(UTC)
            failures = [
                observe_failure(credentials, t, seconds) if observable(t, b) else None
                for t, b in zip(found, before, strict=True)
            ]
        finally:
            restore_key_access(credentials, key_id, subscriptions, seconds)
        restored_at = datetime.now(UTC)
        recoveries = [
            observe_recovery(credentials, t, seconds) if observable(t, b) else None
            for t, b in zip(found, before, strict=True)
        ]
        result = RevocationDrillResult(
            key_id=key_id,
            method=request.method,
            restored_leftover=leftover,
            revocation=revocation,
            revoked_at=revoked_at,
            restored_at=restored_at,
            rows=[
                EvidenceRow(
                    **t.model_dump(),
                    before=healthy,
                    revoked=failed,
                    restored=recovered,
                    verdict=verdict(t.check, failed, recovered, healthy),
                )
                for t, healthy, failed, recovered in zip(
                    found, before, failures, recoveries, strict=True
                )
            ],
        )
        publish_evidence(result)
        summarize("revocation-drill")
        if result.failed:
            raise VerificationFailed(
                key_id,
                "not proved for "
                + ", ".join(f"{r.resource_id} ({r.verdict})" for r in result.failed),
            )
        return result
