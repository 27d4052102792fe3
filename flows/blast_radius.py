"""Blast radius of a key: what it protects, before anyone disables or deletes it.

A Key Vault key:
1. Find the subscriptions to look at.
2. Discover the resources whose encryption matters (Resource Graph or ARM listing), and
   each AKS cluster's StorageClasses (unless `read_kubernetes` is off).
A Key Protect root key:
1. Read the IBM Cloud accounts (root keys and registrations, encrypted images in COS, image
   templates, VPC images).
Then find the key's dependents and the path to each (key → set → disk → VM, key → registry,
key → cluster, key → set → image version region/LUN, key → set → StorageClass; root key →
wrapped DEK in COS → image template, root key → VPC image), published as an artifact, and
what each step read as the run's summary. It writes nothing: `plan_only` returns an empty plan."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from blocks.azure import AzureCredentials
from blocks.ibm import IBMCloudCredentials
from byok.inventory.ibm import IbmAccountSnapshot, key_protect_id
from byok.inventory.request import BlastRadiusRequest, BlastRadiusResult
from byok.inventory.storage_classes import Classes
from byok.outcomes import Plan
from byok.parameters import parse_request
from tasks.inventory import discover_resources, find_dependents, readable_subscriptions
from tasks.inventory_ibm import read_ibm_account
from tasks.inventory_kubernetes import read_storage_classes
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly


@flow(name="key-blast-radius", validate_parameters=False)
@refuse_quietly
def key_blast_radius(
    request: BlastRadiusRequest, credentials: AzureCredentials | None = None
) -> BlastRadiusResult | Plan:
    """Everything the key protects across the subscriptions or accounts (`plan_only`: an
    empty plan, as it writes nothing).

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(BlastRadiusRequest, request)
    if request.plan_only:
        return publish_plan("key-blast-radius")
    rows: list[dict[str, Any]] = []
    accounts: list[IbmAccountSnapshot] = []
    classes: dict[str, Classes] = {}
    if key_protect_id(request.key_id) is not None:
        accounts = [
            read_ibm_account(IBMCloudCredentials.load_saved(scope.ibm_credentials_block), scope)
            for scope in request.ibm_accounts
        ]
    elif credentials or request.azure_credentials_block:
        credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
        subscriptions, _ = readable_subscriptions(credentials, request.subscriptions)
        rows = discover_resources(credentials, subscriptions, True)
        if request.read_kubernetes:
            classes = read_storage_classes(credentials, quote(rows))
    dependents = find_dependents(request.key_id, quote(rows), quote(accounts), quote(classes))
    summarize("key-blast-radius")
    return BlastRadiusResult(key_id=request.key_id, dependents=dependents)
