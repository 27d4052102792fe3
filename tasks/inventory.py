"""Inventory steps: the subscriptions the credentials can read, the resources whose
encryption matters (Resource Graph, or ARM listing per subscription), the state of every
key they use, the controls judged, and the report published, written and announced; in a
plan, the report files it would write."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import isodate
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyVaultKey
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks.azure import AzureCredentials
from byok.azure_errors import error_code
from byok.inventory import discovery, ibm, report, said, storage_classes
from byok.inventory.blast import Dependent, blast_radius, ibm_blast_radius
from byok.inventory.controls import Limits, evaluate
from byok.inventory.ibm import IbmAccountSnapshot, key_protect_id
from byok.inventory.models import EvidenceRow, Finding, KeyState, Kind, RotationPolicy, Verdict
from byok.inventory.request import ReportBucket
from byok.inventory.storage_classes import Classes
from byok.keyvault_ids import KeyId
from clients.azure import AzureClients
from tasks.events import emit_byok_event
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report as report_outcome
from tasks.retry import STEP_RETRIES

PAGE = 1000  # Resource Graph's largest page


@task(name="Find the subscriptions", **STEP_RETRIES)
def readable_subscriptions(
    credentials: AzureCredentials, wanted: list[str]
) -> tuple[list[str], list[Finding]]:
    """The subscriptions to inventory (every visible one when `wanted` is empty) and a
    no-access finding for each wanted one the credentials cannot read."""
    subscriptions = AzureClients.of(credentials).subscriptions().subscriptions
    visible = {str(s.subscription_id).lower() for s in subscriptions.list()}
    hidden = [
        Finding(
            resource_id=f"/subscriptions/{sub}",
            kind=Kind.SUBSCRIPTION,
            scope=sub,
            access=False,
            note="no such subscription, or these credentials cannot read it",
        )
        for sub in wanted
        if sub not in visible
    ]
    readable = [s for s in wanted if s in visible] if wanted else sorted(visible)
    report_outcome("/subscriptions", "read", note=said.subscriptions_note(readable, hidden))
    return readable, hidden


@task(name="Discover resources", **STEP_RETRIES, **IN_MEMORY)
def discover_resources(
    credentials: AzureCredentials,
    subscriptions: list[str],
    use_resource_graph: bool,
    types: tuple[str, ...] = discovery.ALL_TYPES,
) -> list[dict[str, Any]]:
    """Every disk encryption set, disk, VM, image version, registry, cluster, key vault and
    managed HSM of the subscriptions (or those of `types`), in Resource Graph's row shape
    (with the power state of the VMs on confidential sets)."""
    rows = (
        _discovered(credentials, subscriptions, use_resource_graph, types) if subscriptions else []
    )
    report_outcome(said.scope(subscriptions), "read", note=said.counted(len(rows), "resource"))
    return rows


def _discovered(
    credentials: AzureCredentials,
    subscriptions: list[str],
    use_resource_graph: bool,
    types: tuple[str, ...],
) -> list[dict[str, Any]]:
    clients = AzureClients.of(credentials)
    rows = None
    if use_resource_graph:
        try:
            rows = _query_graph(clients, subscriptions, types)
        except HttpResponseError as exc:
            if exc.status_code != 403:
                raise
            get_run_logger().warning(
                "Resource Graph refused the query (%s): listing through ARM instead",
                error_code(exc),
            )
    if rows is None:
        rows = [row for sub in subscriptions for row in _list_through_arm(credentials, sub, types)]
    _add_power_states(credentials, rows)
    return rows


def _add_power_states(credentials: AzureCredentials, rows: list[dict[str, Any]]) -> None:
    """The power state of each VM on a confidential set where the row lacks it (ARM listing;
    Resource Graph's rows carry it), read from its instance view and put where Resource Graph
    has it."""
    wanted = {r["id"] for r in discovery.confidential_vms(rows) if not discovery.power_state(r)}
    for row in rows:
        if row["id"] not in wanted:
            continue
        parts = row["id"].split("/")
        machines = AzureClients.of(credentials, parts[2]).compute().virtual_machines
        view = machines.get(parts[4], parts[-1], expand="instanceView").instance_view
        codes = [str(s.code) for s in (view.statuses if view else None) or []]
        code = next((c for c in codes if c.startswith("PowerState/")), None)
        extended = row.setdefault("properties", {}).setdefault("extended", {})
        extended["instanceView"] = {"powerState": {"code": code}}


def _query_graph(
    clients: AzureClients, subscriptions: list[str], types: tuple[str, ...] = discovery.ALL_TYPES
) -> list[dict[str, Any]]:
    graph = clients.resource_graph()
    rows: list[dict[str, Any]] = []
    token = None
    while True:
        page = graph.resources(
            QueryRequest(
                subscriptions=subscriptions,
                query=discovery.discovery_query(types),
                options=QueryRequestOptions(top=PAGE, skip_token=token),
            )
        )
        rows.extend(page.data)  # type: ignore[arg-type]  # objectArray: a list of rows
        token = page.skip_token
        if not token:
            return rows


def _list_through_arm(
    credentials: AzureCredentials, subscription: str, types: tuple[str, ...] = discovery.ALL_TYPES
) -> list[dict[str, Any]]:
    """The same rows from ARM's list operations, one subscription at a time."""
    clients = AzureClients.of(credentials, subscription)
    compute = clients.compute()
    listings: dict[str, Callable[[], Iterable[Any]]] = {
        "microsoft.compute/diskencryptionsets": compute.disk_encryption_sets.list,
        "microsoft.compute/disks": compute.disks.list,
        "microsoft.compute/virtualmachines": compute.virtual_machines.list_all,
        "microsoft.compute/galleries/images/versions": lambda: _image_versions(compute),
        "microsoft.containerregistry/registries": lambda: (
            clients.container_registry().registries.list()
        ),
        "microsoft.containerservice/managedclusters": lambda: (
            clients.container_service().managed_clusters.list()
        ),
        discovery.VAULT_TYPE: lambda: clients.keyvault_management().vaults.list_by_subscription(),
        discovery.HSM_TYPE: lambda: (
            clients.keyvault_management().managed_hsms.list_by_subscription()
        ),
    }
    return [
        {**_wire(model), "subscriptionId": subscription}
        for kind in types
        for model in listings[kind]()
    ]


def _image_versions(compute: Any) -> Iterator[Any]:
    """Every image version of every gallery of the subscription."""
    for gallery in compute.galleries.list():
        group = str(gallery.id).split("/")[4]
        for image in compute.gallery_images.list_by_gallery(group, str(gallery.name)):
            yield from compute.gallery_image_versions.list_by_gallery_image(
                group, str(gallery.name), str(image.name)
            )


def _wire(model: Any) -> dict[str, Any]:
    """A model as the REST API shapes it (what Resource Graph rows hold)."""
    if hasattr(model, "serialize"):  # msrest-generated models
        return dict(model.serialize(keep_readonly=True))
    return dict(model.as_dict())  # TypeSpec-generated models are keyed by the wire names


@task(name="Read the keys", **STEP_RETRIES, **IN_MEMORY)
def read_key_states(
    credentials: AzureCredentials, rows: list[dict[str, Any]]
) -> dict[str, KeyState]:
    """The state of every key the resources use (attributes, rotation policy, its store's
    kind, tenant and protection), read once per key; a key the credentials cannot read is
    marked unreadable, with its store's tenant (from the store's row, else from the store's
    authentication challenge: a cross-tenant key)."""
    clients = AzureClients.of(credentials)
    vaults = discovery.vaults_by_uri(rows)
    states: dict[str, KeyState] = {}
    for url in sorted(discovery.key_urls(rows)):
        key_id = KeyId.parse(url)
        vault = discovery.vault_for(url, vaults)
        props = (vault or {}).get("properties") or {}
        keys = clients.keys(key_id.vault_url)
        try:
            key = keys.get_key(key_id.name, key_id.version)
            policy = _rotation_policy(keys, key_id.name)
        except HttpResponseError as exc:
            get_run_logger().warning("Key %s not readable: %s", url, error_code(exc))
            states[url] = KeyState(
                key_id=url,
                version=key_id.version,
                store_id=(vault or {}).get("id"),
                store_kind=discovery.store_kind(url, vault),
                tenant_id=props.get("tenantId") or _store_tenant(credentials, url),
                readable=False,
            )
            continue
        states[url] = _key_state(url, key, policy, vault, props)
    report_outcome("keys the resources use", "read", note=said.keys_note(states))
    return states


_AUTHORITY = re.compile(r'authorization(?:_uri)?="[^"]*/([0-9a-fA-F-]{36})/?"')


def _store_tenant(credentials: AzureCredentials, url: str) -> str | None:
    """The tenant a key store authenticates callers with, named in the bearer challenge it
    answers an unauthenticated request with (what the Key Vault SDKs follow:
    https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses)."""
    try:
        answer = requests.get(
            f"{url}?api-version=7.5", verify=credentials.ca_bundle or True, timeout=10
        )
    except requests.RequestException:
        return None
    found = _AUTHORITY.search(answer.headers.get("WWW-Authenticate", ""))
    return found[1] if found else None


def _rotation_policy(keys: Any, name: str) -> RotationPolicy | None:
    try:
        policy = keys.get_key_rotation_policy(name)
    except ResourceNotFoundError:
        return None
    found = RotationPolicy(expires_after_days=_days(policy.expires_in))
    for action in policy.lifetime_actions or []:
        kind = str(getattr(action.action, "value", action.action)).lower()
        if kind == "rotate":
            found.rotate_after_days = _days(action.time_after_create)
            found.rotate_before_expiry_days = _days(action.time_before_expiry)
        elif kind == "notify":
            found.notify_before_expiry_days = _days(action.time_before_expiry)
    return found


def _days(duration: str | None) -> int | None:
    """Days of an ISO 8601 duration as Key Vault writes them (P90D, P1Y, P3M, P2Y6M)."""
    if not duration:
        return None
    value = isodate.parse_duration(duration)
    if isinstance(value, isodate.Duration):
        return int(value.years) * 365 + int(value.months) * 30 + value.days
    return value.days


def _key_state(
    url: str, key: KeyVaultKey, policy: RotationPolicy | None, vault: Any, props: dict
) -> KeyState:
    return KeyState(
        key_id=url,
        version=key.properties.version,
        created=key.properties.created_on,
        enabled=key.properties.enabled,
        expires=key.properties.expires_on,
        rotation_policy=policy,
        store_id=(vault or {}).get("id"),
        store_kind=discovery.store_kind(url, vault),
        tenant_id=props.get("tenantId"),
        store_soft_delete=props.get("enableSoftDelete", True) if vault else None,
        store_purge_protection=bool(props.get("enablePurgeProtection")) if vault else None,
    )


@task(name="Judge the controls", **IN_MEMORY)
def judge_controls(
    rows: list[dict[str, Any]],
    keys: dict[str, KeyState],
    unreadable: list[Finding],
    ibm_accounts: list[IbmAccountSnapshot],
    max_key_age_days: int,
    min_days_before_expiry: int,
    classes: dict[str, Classes] | None = None,
) -> list[EvidenceRow]:
    """One evidence row per resource part and control, Azure's (with the clusters'
    StorageClasses, by lower-cased cluster id) and IBM Cloud's."""
    sets, blocking = discovery.set_ids(rows), discovery.blocking_vms(rows)
    findings = [f for row in rows for f in discovery.findings(row, sets, keys.get, blocking)]
    findings += [
        f
        for row in rows
        for f in storage_classes.findings(
            row, (classes or {}).get(row["id"].lower()), sets, keys.get
        )
    ]
    findings += [f for account in ibm_accounts for f in ibm.findings(account)]
    limits = Limits(
        now=datetime.now(UTC),
        max_key_age_days=max_key_age_days,
        min_days_before_expiry=min_days_before_expiry,
    )
    return report.ordered(evaluate([*unreadable, *findings], limits))


@task(name="Publish the report", **IN_MEMORY)
def publish_report(evidence: list[EvidenceRow], changes: list[report.Change]) -> None:
    """A table artifact of every row and a markdown summary (non-compliant first)."""
    create_table_artifact(
        key="customer-key-inventory",
        table=[
            {
                "resource": r.resource_id,
                "part": r.part,
                "control": r.control,
                "verdict": r.verdict.value,
                "rule": r.rule,
                "key": r.key_id or "",
                "key age (days)": "" if r.key_age_days is None else r.key_age_days,
            }
            for r in evidence
        ],
        description="Customer-managed keys: one row per resource part and control.",
    )
    summary = report.markdown(evidence)
    if changes:
        summary += "\n## Changes since the last run\n\n" + "\n".join(
            f"- `{c.resource_id}` {c.part}: {c.what}" for c in changes
        )
    create_markdown_artifact(key="customer-key-inventory-summary", markdown=summary)
    report_outcome("customer-key-inventory", "publish", note=said.evidence_note(evidence, changes))


@task(name="Announce what needs action", **IN_MEMORY)
def emit_inventory_events(evidence: list[EvidenceRow]) -> int:
    """`byok.key.too-old`, `byok.key.near-expiry` and `byok.resource.not-customer-key`
    events for an automation to act on; returns how many were emitted."""
    names = {
        "key-age": ("key.too-old", "key"),
        "key-expiry": ("key.near-expiry", "key"),
        "customer-key": ("resource.not-customer-key", "resource"),
    }
    sent = set()
    for row in evidence:
        if row.verdict != Verdict.NON_COMPLIANT or row.control not in names:
            continue
        if row.control == "key-expiry" and row.key_expires is None:
            continue  # no expiry date at all: a report item, not an imminent event
        name, about = names[row.control]
        subject = row.key_id if about == "key" and row.key_id else row.resource_id
        if (name, subject) in sent:
            continue
        sent.add((name, subject))
        emit_byok_event(
            name,
            subject,
            row.kind.value if about == "resource" else "key",
            related={"resource": row.resource_id},
            payload={"rule": row.rule, "part": row.part, "subscription": row.scope},
        )
    report_outcome("byok events", "emit", note=said.counted(len(sent), "event"))
    return len(sent)


@task(name="Find the key's dependents", **IN_MEMORY)
def find_dependents(
    key_id: str,
    rows: list[dict[str, Any]],
    ibm_accounts: list[IbmAccountSnapshot],
    classes: dict[str, Classes] | None = None,
) -> list[Dependent]:
    """Everything the key (Key Vault's, in the Azure rows and the clusters' StorageClasses,
    or Key Protect's, in the IBM accounts) protects, with the path to it, also as a table
    artifact."""
    if key_protect_id(key_id) is not None:
        dependents = ibm_blast_radius(key_id, ibm_accounts)
    else:
        dependents = blast_radius(key_id, rows, classes)
    create_table_artifact(
        key="key-blast-radius",
        table=[
            {
                "resource": d.resource_id,
                "kind": d.kind.value,
                "part": d.part,
                "path": " -> ".join(d.path),
            }
            for d in dependents
        ],
        description=f"What {key_id} protects ({len(dependents)} dependents).",
    )
    report_outcome(key_id, "find", note=said.counted(len(dependents), "dependent"))
    return dependents


@task(name="Plan the report files")
def plan_report_files(report_dir: str | None, bucket: ReportBucket | None) -> None:
    """What `write_report_files` would write: the CSV, JSON and OSCAL report and this run's
    history entry, in the directory or the bucket (nothing without either). The bucket's
    write access is not probed: the probe writes an object."""
    files = "the CSV, JSON and OSCAL report and this run's history entry"
    step = "Write the report files"
    if report_dir is not None:
        report_outcome(report_dir, "write", step=step, note=files, planned=True)
    elif bucket is not None:
        where = f"cos bucket {bucket.bucket}/{bucket.prefix}"
        report_outcome(where, "upload", step=step, note=files, planned=True)
