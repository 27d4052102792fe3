"""Fleet inventory and evidence: what every customer key protects, across subscriptions.

1. Find the subscriptions to look at (every visible one, or those asked; the ones the
   credentials cannot read become `no-access` rows).
2. Discover the resources whose encryption matters with Azure Resource Graph (or ARM
   listing per subscription): disk encryption sets, disks, VMs, gallery image versions
   per region and LUN, registries, AKS clusters, key vaults.
3. Read each key they use once: version, age, expiry, rotation policy, vault protection.
4. Judge the controls: one evidence row per resource part and control, rule named.
5. Write CSV, JSON and OSCAL files and keep the run's rows (changes since the last run).
6. Publish the report as artifacts.
7. Emit events for keys too old or near expiry and resources without a customer key."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from blocks.azure import AzureCredentials
from byok.inventory.models import Verdict
from byok.inventory.request import InventoryRequest, InventoryResult, check_report_dir
from byok.parameters import parse_request
from tasks.inventory import (
    discover_resources,
    emit_inventory_events,
    judge_controls,
    publish_report,
    read_key_states,
    readable_subscriptions,
    write_report_files,
)
from tasks.refusal import refuse_quietly


@flow(name="inventory-customer-managed-keys", validate_parameters=False)
@refuse_quietly
def inventory_customer_managed_keys(request: InventoryRequest) -> InventoryResult:
    """Every customer-key resource of the subscriptions, its key and the controls judged."""
    request = parse_request(InventoryRequest, request)
    started = datetime.now(UTC)
    check_report_dir(request.report_dir)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    subscriptions, unreadable = readable_subscriptions(credentials, request.subscriptions)
    rows = discover_resources(credentials, subscriptions, request.use_resource_graph)
    keys = read_key_states(credentials, rows)
    evidence = judge_controls(
        rows, keys, unreadable, request.max_key_age_days, request.min_days_before_expiry
    )
    files, changes = write_report_files(evidence, request.report_dir, started)
    publish_report(evidence, changes)
    emit_inventory_events(evidence)
    return InventoryResult(
        resources=len(rows),
        rows=len(evidence),
        non_compliant=sum(r.verdict == Verdict.NON_COMPLIANT for r in evidence),
        no_access=sum(r.verdict == Verdict.NO_ACCESS for r in evidence),
        files=files,
        changes=changes,
    )
