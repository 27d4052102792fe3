"""Blast radius of a key: what it protects, before anyone disables or deletes it.

1. Find the subscriptions to look at.
2. Discover the resources whose encryption matters (Resource Graph or ARM listing).
3. Find the key's dependents and the path to each (key → set → disk → VM, key → registry,
   key → cluster, key → set → image version region/LUN), published as an artifact."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.inventory.request import BlastRadiusRequest, BlastRadiusResult
from byok.parameters import parse_request
from tasks.inventory import discover_resources, find_dependents, readable_subscriptions
from tasks.refusal import refuse_quietly


@flow(name="key-blast-radius", validate_parameters=False)
@refuse_quietly
def key_blast_radius(request: BlastRadiusRequest) -> BlastRadiusResult:
    """Everything the key protects across the subscriptions."""
    request = parse_request(BlastRadiusRequest, request)
    credentials = AzureCredentials.load_saved(request.azure_credentials_block)
    subscriptions, _ = readable_subscriptions(credentials, request.subscriptions)
    rows = discover_resources(credentials, subscriptions, True)
    return BlastRadiusResult(
        key_id=request.key_id, dependents=find_dependents(request.key_id, rows)
    )
