"""Fleet inventory and evidence: what every customer key protects, across Azure
subscriptions and IBM Cloud accounts.

1. Find the subscriptions to look at (every visible one, or those asked; the ones the
   credentials cannot read become `no-access` rows).
2. Discover the resources whose encryption matters with Azure Resource Graph (or ARM
   listing per subscription): disk encryption sets, disks, VMs, gallery image versions
   per region and LUN, registries, AKS clusters (KMS key, node pools), key vaults, managed
   HSMs; the power state of the VMs on confidential sets (instance view where missing).
   Each AKS cluster's StorageClasses through its Kubernetes API (unless `read_kubernetes`
   is off; a cluster whose API refuses the credentials becomes a `no-access` row).
3. Read each key they use once: version, age, expiry, rotation policy, store protection;
   an unreadable key's store tenant from its authentication challenge.
4. Read each IBM Cloud account: Key Protect root keys and their registrations, encrypted
   images in COS, image templates, VPC images.
5. Judge the controls: one evidence row per resource part and control, rule named.
6. Write CSV, JSON and OSCAL files to a directory or a COS bucket (checked before step 1)
   and keep the run's rows (changes since the last run).
7. Publish the report as artifacts.
8. Emit events for keys too old or near expiry and resources without a customer key.
9. Publish what each step read, published and wrote as the run's summary.
It writes only the report files of step 6: `plan_only` checks the directory (a bucket is not
probed: the probe writes) and lists those files, nothing written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from blocks.azure import AzureCredentials
from blocks.ibm import IBMCloudCredentials
from byok.inventory.models import Finding, KeyState, Verdict
from byok.inventory.request import InventoryRequest, InventoryResult, check_report_dir
from byok.inventory.storage_classes import Classes
from byok.outcomes import Plan
from byok.parameters import parse_request
from tasks.inventory import (
    discover_resources,
    emit_inventory_events,
    judge_controls,
    plan_report_files,
    publish_report,
    read_key_states,
    readable_subscriptions,
)
from tasks.inventory_ibm import read_ibm_account
from tasks.inventory_kubernetes import read_storage_classes
from tasks.inventory_report import check_report_bucket, write_report_files
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly


# The steps hand the whole fleet on `quote`d: Prefect would otherwise walk every row looking
# for futures before each step (seconds per step at 1,000 resources).
@flow(name="inventory-customer-managed-keys", validate_parameters=False)
@refuse_quietly
def inventory_customer_managed_keys(
    request: InventoryRequest, credentials: AzureCredentials | None = None
) -> InventoryResult | Plan:
    """Every customer-key resource of the subscriptions and accounts, its key and the
    controls judged (`plan_only`: the report files it would write).

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(InventoryRequest, request)
    started = datetime.now(UTC)
    check_report_dir(request.report_dir)
    if request.plan_only:
        plan_report_files(request.report_dir, request.report_bucket)
        return publish_plan("inventory-customer-managed-keys")
    bucket = None
    if request.report_bucket is not None:
        bucket_block = IBMCloudCredentials.load_saved(request.report_bucket.ibm_credentials_block)
        check_report_bucket(bucket_block, request.report_bucket)
        bucket = (bucket_block, request.report_bucket)
    rows: list[dict[str, Any]] = []
    keys: dict[str, KeyState] = {}
    unreadable: list[Finding] = []
    classes: dict[str, Classes] = {}
    if credentials or request.azure_credentials_block:
        credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
        subscriptions, unreadable = readable_subscriptions(credentials, request.subscriptions)
        rows = discover_resources(credentials, subscriptions, request.use_resource_graph)
        keys = read_key_states(credentials, quote(rows))
        if request.read_kubernetes:
            classes = read_storage_classes(credentials, quote(rows))
    accounts = [
        read_ibm_account(IBMCloudCredentials.load_saved(scope.ibm_credentials_block), scope)
        for scope in request.ibm_accounts
    ]
    evidence = judge_controls(
        quote(rows),
        quote(keys),
        unreadable,
        quote(accounts),
        request.max_key_age_days,
        request.min_days_before_expiry,
        quote(classes),
    )
    files, changes = write_report_files(quote(evidence), started, request.report_dir, bucket)
    publish_report(quote(evidence), changes)
    emit_inventory_events(quote(evidence))
    summarize("inventory-customer-managed-keys")
    return InventoryResult(
        resources=len(rows) + sum(a.resources for a in accounts),
        rows=len(evidence),
        non_compliant=sum(r.verdict == Verdict.NON_COMPLIANT for r in evidence),
        no_access=sum(r.verdict == Verdict.NO_ACCESS for r in evidence),
        files=files,
        changes=changes,
    )
