"""The inventory flow against the emulator: a compliant set and what is not compliant, across
two subscriptions, through Resource Graph and through ARM listing, with the report's files,
the changes between runs, the events, and the refusals of bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.keyvault.keys import (
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from pydantic import ValidationError
from trestle.oscal.assessment_results import AssessmentResults

from blocks.azure import AzureCredentials
from byok.inventory.request import BlastRadiusRequest
from byok.rotation import ROTATION_TYPES
from byok.validation import InvalidRequest
from clients.azure import AzureClients
from emulator.server import Emulator
from flows.blast_radius import key_blast_radius
from flows.disk_encryption_set import prepare_disk_encryption_set
from flows.inventory import InventoryRequest, inventory_customer_managed_keys
from tasks.inventory import discover_resources
from tests.flows.test_disk_encryption_set import request as des_request
from tests.helpers import outcomes, run_with_tables

DISK = {
    "location": "westeurope",
    "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 4},
}


@pytest.fixture
def fleet(azure_block: str, new_subscription: Callable[[str], str]) -> dict[str, str]:
    """A set with its key (home subscription), a platform-key disk in a second one."""
    result = prepare_disk_encryption_set(des_request(azure_block))
    other = new_subscription("team-b")
    clients = AzureClients(AzureCredentials.load_saved(azure_block), other)
    clients.resources().resource_groups.create_or_update("rg-b", {"location": "westeurope"})
    clients.compute().disks.begin_create_or_update("rg-b", "plain", DISK).result()
    return {
        "des": result.disk_encryption_set.id,
        "key": result.key.id,
        "vault": result.vault.id,
        "other": other,
    }


def inventory(block: str, **overrides: object):
    return inventory_customer_managed_keys(
        InventoryRequest(azure_credentials_block=block, **overrides)  # type: ignore[arg-type]
    )


def verdicts(path: Path) -> dict[tuple[str, str], str]:
    rows = json.loads((path / "inventory.json").read_text())
    return {(r["resource_id"].rsplit("/", 1)[-1], r["control"]): r["verdict"] for r in rows}


def test_inventory_reports_keys_and_gaps_across_subscriptions(
    azure_block: str, emulator: Emulator, fleet: dict[str, str], tmp_path: Path
) -> None:
    request = InventoryRequest(azure_credentials_block=azure_block, report_dir=str(tmp_path))
    result, tables = run_with_tables(inventory_customer_managed_keys, request)
    found = verdicts(tmp_path)
    assert found[("des-aks", "key-age")] == "compliant"
    assert found[("des-aks", "vault-recoverable")] == "compliant"
    assert found[("des-aks", "rotation-policy")] == "non-compliant"  # none set by the flow
    assert found[("des-aks", "key-expiry")] == "non-compliant"  # no expiry date
    assert found[("plain", "customer-key")] == "non-compliant"
    assert result.resources >= 3 and result.non_compliant == 3
    # The files: CSV with every row, OSCAL that the OSCAL models accept back.
    with (tmp_path / "inventory.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == result.rows
    oscal = json.loads((tmp_path / "inventory-oscal.json").read_text())["assessment-results"]
    findings = AssessmentResults.model_validate(oscal).results[0].findings
    assert findings is not None and len(findings) == result.rows
    # One Resource Graph query made the whole discovery.
    assert len(emulator.requests.find("POST", "Microsoft.ResourceGraph/resources")) == 1
    # The summary: what each step read, published and wrote.
    summary = tables["inventory-customer-managed-keys-summary"]
    assert outcomes(summary) == [
        ("Find the subscriptions", "read"),
        ("Discover resources", "read"),
        ("Read the keys", "read"),
        ("Read the StorageClasses", "read"),
        ("Write the report files", "written"),
        ("Publish the report", "published"),
        ("Announce what needs action", "emitted"),
    ]
    assert summary[1]["outcome"] == f"read ({result.resources} resources)"
    assert summary[2]["outcome"] == "read (1 key)"
    assert summary[4]["resource"] == str(tmp_path)
    assert summary[4]["outcome"].startswith(
        "written (4 files: inventory.csv, inventory.json, inventory-oscal.json, history/"
    )
    assert summary[5]["outcome"] == (
        f"published ({result.rows} evidence rows: {result.rows - 3} compliant, 3 non-compliant; "
        f"{len(result.changes)} changes since the last run)"
    )


def test_rotation_policy_and_changes_between_runs(
    azure_block: str, emulator: Emulator, fleet: dict[str, str], tmp_path: Path
) -> None:
    inventory(azure_block, report_dir=str(tmp_path))
    clients = AzureClients(AzureCredentials.load_saved(azure_block))
    vault_url = fleet["key"].split("/keys/")[0]
    clients.keys(vault_url).update_key_rotation_policy(
        "aks-key",
        KeyRotationPolicy(
            lifetime_actions=[
                KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")
            ],
            expires_in="P1Y",
        ),
    )
    other = AzureClients(clients.block, fleet["other"])
    other.compute().disks.begin_create_or_update("rg-b", "plain2", DISK).result()
    second = inventory(azure_block, report_dir=str(tmp_path))
    assert verdicts(tmp_path)[("des-aks", "rotation-policy")] == "compliant"
    what = {(c.resource_id.rsplit("/", 1)[-1], c.what) for c in second.changes}
    assert ("plain2", "new resource without customer key") in what
    assert ("des-aks", "rotation-policy: non-compliant -> compliant") in what
    assert len(list((tmp_path / "history").glob("*.json"))) == 2


def test_arm_listing_finds_what_resource_graph_finds(
    azure_block: str, fleet: dict[str, str], tmp_path: Path
) -> None:
    graph, listing = tmp_path / "graph", tmp_path / "arm"
    graph.mkdir(), listing.mkdir()
    inventory(azure_block, report_dir=str(graph))
    inventory(azure_block, report_dir=str(listing), use_resource_graph=False)
    assert verdicts(graph) == verdicts(listing)


def test_a_rotation_discovers_only_its_dependents_and_key_stores(
    azure_block: str, fleet: dict[str, str]
) -> None:
    credentials = AzureCredentials.load_saved(azure_block)
    subscriptions = [fleet["des"].split("/")[2], fleet["other"]]
    graph = discover_resources(credentials, subscriptions, True, ROTATION_TYPES)
    listing = discover_resources(credentials, subscriptions, False, ROTATION_TYPES)
    # the other subscription's disk is left out; the set and its vault are found both ways
    assert {(r["type"].lower(), r["id"].lower()) for r in graph} == {
        ("microsoft.compute/diskencryptionsets", fleet["des"].lower()),
        ("microsoft.keyvault/vaults", fleet["vault"].lower()),
    }
    assert {r["id"].lower() for r in listing} == {r["id"].lower() for r in graph}


def test_unknown_subscription_is_a_row_and_bad_input_is_refused(
    azure_block: str, emulator: Emulator, fleet: dict[str, str], tmp_path: Path
) -> None:
    missing = "00000000-0000-4000-8000-0000000000aa"
    result = inventory(azure_block, subscriptions=[missing, fleet["other"]])
    assert result.no_access == 1
    with pytest.raises(ValidationError, match=r"subscriptions\[0\] = 'nope': subscription ids"):
        InventoryRequest(azure_credentials_block=azure_block, subscriptions=["nope"])
    emulator.requests.clear()
    with pytest.raises(InvalidRequest, match=r"subscriptions.*'nope'.*subscription ids are GUIDs"):
        inventory_customer_managed_keys(
            {"azure_credentials_block": azure_block, "subscriptions": ["nope"]}  # type: ignore[arg-type]
        )
    with pytest.raises(InvalidRequest, match=r"report_dir = .*must be an existing directory"):
        inventory(azure_block, report_dir=str(tmp_path / "absent"))
    assert emulator.requests.find("POST", "ResourceGraph") == []


def test_blast_radius_lists_what_the_key_protects(azure_block: str, fleet: dict[str, str]) -> None:
    versionless = fleet["key"].rsplit("/", 1)[0]
    result, tables = run_with_tables(
        key_blast_radius,
        BlastRadiusRequest(azure_credentials_block=azure_block, key_id=versionless),
    )
    assert [(d.resource_id, d.path) for d in result.dependents] == [
        (fleet["des"], [fleet["key"], fleet["des"]])
    ]
    summary = tables["key-blast-radius-summary"]
    assert outcomes(summary) == [
        ("Find the subscriptions", "read"),
        ("Discover resources", "read"),
        ("Read the StorageClasses", "read"),
        ("Find the key's dependents", "found"),
    ]
    assert summary[-1] == {
        "step": "Find the key's dependents",
        "resource": versionless,
        "outcome": "found (1 dependent)",
    }
