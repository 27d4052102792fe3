"""Fleet key rotation: the request, the plan (which keys get a new version and what each of
their disk encryption sets, registries and KMS clusters must do), and the rows of the result.
Pure logic, checked before any call: the flow turns discovery rows and key facts into a plan
here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import zip_longest
from typing import Literal

from azure.mgmt.core.tools import parse_resource_id
from pydantic import AliasChoices, BaseModel, Field, field_validator

from byok.aks_kms import experience_of
from byok.errors import InvalidRequest
from byok.inventory.discovery import STORE_KINDS, Row, get, vaults_by_uri
from byok.inventory.ibm import key_protect_id
from byok.inventory.request import FleetScope, IbmAccountScope
from byok.key_policy import RotationPolicySpec
from byok.keyvault_ids import KeyId

# The tag on a key version this tool made, naming the rotation it was made for.
ROTATION_TAG = "byok-rotation"
THREADS_PER_SUBSCRIPTION = 32
AUTO_THREADS_MAX = 128
THREADS_MAX = 256
"""Moves at once a request may ask for: each process's HTTP pool keeps a connection for each
of its threads (`clients.azure.HTTP_POOL_SIZE`); a larger pool would near the usual limit of
1,024 open files."""
KEY_THREADS = 16
"""Keys rotated at once by the fleet flow run itself."""


class FleetRotationRequest(FleetScope):
    """Which keys to rotate (filters combine with AND; age and expiry with OR), and how."""

    key_ids: list[str] = Field(
        default_factory=list,
        description="Key Vault key ids (versioned or not), e.g. from the inventory; empty: "
        "every key a disk encryption set or registry uses.",
    )
    key_vaults: list[str] = Field(
        default_factory=list, description="Only keys in these vaults (names or vault URIs)."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Only keys carrying all of these tags."
    )
    older_than_days: int | None = Field(
        None, ge=0, description="Only keys whose latest version is older than this."
    )
    expiring_within_days: int | None = Field(
        None, ge=0, description="Only keys whose latest version expires within this."
    )
    plan_only: bool = Field(
        False,
        # `dry_run`: this field's name before every flow had `plan_only` (saved deployments)
        validation_alias=AliasChoices("plan_only", "dry_run"),
        description="Plan only: publish the plan (keys to rotate, dependents to update) as "
        "the `customer-key-rotation-plan` artifact and the result; write nothing.",
    )
    rotation_id: str | None = Field(
        None,
        description="Names this rotation; new versions are tagged `byok-rotation=<value>` and a "
        "re-run with the same value reuses them. Empty: derived from the selection and the "
        "run's date, so a re-run of the same selection on the same day resumes it.",
    )
    rotation_policy: RotationPolicySpec | None = Field(
        None,
        description="Key Vault rotation policy every rotated key gets (set, then read back); "
        "empty: policies are left as they are.",
    )
    pickup_timeout_minutes: float = Field(
        75,
        gt=0,
        description="How long to wait for sets and registries that follow the latest version "
        "to pick the new one up (Azure: within an hour).",
    )
    poll_seconds: float = Field(30, gt=0, description="Seconds between checks.")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where the keys and dependents run: threads, or a Dask cluster."
    )
    dask_address: str | None = Field(
        None,
        description="Address of an existing Dask scheduler (tcp://host:8786); empty with "
        "task_runner 'dask': a local cluster of `dask_workers` processes.",
    )
    dask_workers: int = Field(2, ge=1, description="Workers of a local Dask cluster.")
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=THREADS_MAX,
        description=f"Moves at once (at most {THREADS_MAX}): threads of the thread runner, "
        "or of a local Dask cluster's workers together. Empty: "
        f"{THREADS_PER_SUBSCRIPTION} for each subscription the run moves dependents in, at most "
        f"{AUTO_THREADS_MAX}: ARM paces each subscription apart, and spread over many a move "
        "mostly waits on its polls (10 subscriptions, 1,000 dependents: 32 threads 30 s, the "
        "default 128 12-18 s).",
    )
    wait_for_other_run: bool = Field(
        False,
        description="When another run is rotating one of the keys: wait for it (true) or "
        "report that key as failed at once (false).",
    )
    ibm_accounts: list[IbmAccountScope] = Field(
        default_factory=list,
        description="IBM Cloud accounts whose Key Protect root keys rotate too (their classic "
        "images' wrapped DEKs rewrapped and recorded, their VPC images verified).",
    )
    root_keys: list[str] = Field(
        default_factory=list,
        description="Key Protect root key ids or CRNs; empty: every root key that protects "
        "an image in `ibm_accounts`.",
    )
    root_key_material_blocks: dict[str, str] = Field(
        default_factory=dict,
        description="For imported root keys (Key Protect rotates them only with new material "
        "from your key source): key id or CRN → name of a Secret block holding the new "
        "material (16, 24 or 32 bytes, base64). An imported key due without one is a failed "
        "row.",
    )

    @field_validator("key_ids")
    @classmethod
    def _key_ids(cls, values: list[str]) -> list[str]:
        for i, value in enumerate(values):
            try:
                KeyId.parse(value)
            except ValueError:
                raise InvalidRequest(
                    f"key_ids[{i}]", value, "must be https://<vault>/keys/<name>[/<version>]"
                ) from None
        return values

    @field_validator("root_keys")
    @classmethod
    def _root_keys(cls, values: list[str]) -> list[str]:
        for i, value in enumerate(values):
            if key_protect_id(value) is None:
                raise InvalidRequest(
                    f"root_keys[{i}]", value, "must be a Key Protect key id (a GUID) or key CRN"
                )
        return values

    @field_validator("root_key_material_blocks")
    @classmethod
    def _material_blocks(cls, values: dict[str, str]) -> dict[str, str]:
        found = {}
        for key, block in values.items():
            key_id = key_protect_id(key)
            if key_id is None:
                raise InvalidRequest(
                    "root_key_material_blocks",
                    key,
                    "keys must be Key Protect key ids (GUIDs) or key CRNs",
                )
            found[key_id] = block
        return found

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise InvalidRequest("dask_address", value, "must be a URL such as tcp://host:8786")
        return value


class DependentKind(StrEnum):
    """What follows a key and must move to its new version."""

    DISK_ENCRYPTION_SET = "disk-encryption-set"
    REGISTRY = "registry"
    AKS_CLUSTER = "aks-cluster"  # KMS etcd encryption (securityProfile.azureKeyVaultKms)


class Status(StrEnum):
    """A row's outcome."""

    PLANNED = "planned"
    ROTATED = "rotated"
    VERIFIED = "verified"
    FAILED = "failed"
    SKIPPED = "skipped"


class KeyFacts(BaseModel):
    """A key's latest version as Key Vault reports it (None fields: not readable)."""

    key_id: str = Field(description="Versionless key id.")
    latest: str | None = Field(None, description="Versioned id of the latest version.")
    created: datetime | None = None
    expires: datetime | None = None
    enabled: bool = True
    tags: dict[str, str] = Field(default_factory=dict)
    error: str | None = Field(None, description="Why the key could not be read.")


class Dependent(BaseModel):
    """A disk encryption set, registry or KMS cluster that uses a key."""

    resource_id: str
    kind: DependentKind
    key_url: str = Field(description="The key id it is configured with.")
    follows_latest: bool = Field(description="It picks new versions up by itself.")
    identity: str | None = Field(None, description="A registry's encryption identity.")
    confidential: bool = Field(
        False, description="A confidential-VM set: rotated offline, every VM on it stopped."
    )

    @property
    def subscription_id(self) -> str:
        """Its subscription."""
        return str(parse_resource_id(self.resource_id)["subscription"])

    @property
    def resource_group(self) -> str:
        """Its resource group."""
        return str(parse_resource_id(self.resource_id)["resource_group"])

    @property
    def name(self) -> str:
        """Its name."""
        return str(parse_resource_id(self.resource_id)["name"])

    @property
    def action(self) -> str:
        """What the rotation does to it."""
        if self.kind == DependentKind.AKS_CLUSTER:  # both KMS experiences: every Secret too
            return "update, re-write Secrets"
        return "wait for pickup" if self.follows_latest else "update"


class PlannedKey(BaseModel):
    """A key to rotate: reuse a version or make one, then move its dependents."""

    key_id: str
    latest: str
    make_version: bool = Field(
        description="False: reuse `latest` (made by this rotation or "
        "a rotation policy, not yet used by every dependent)."
    )
    reason: str
    dependents: list[Dependent] = Field(default_factory=list)


class RotationRow(BaseModel):
    """One line of the result: a key, or one of its dependents."""

    key_id: str
    dependent_id: str = ""
    kind: str = "key"
    action: str
    status: Status
    reason: str = ""
    version: str = Field("", description="The key version the row is about.")


def moved_row(dependent: Dependent, key: RotationRow) -> RotationRow:
    """A dependent's row once on its key's new version (verified)."""
    return RotationRow(
        key_id=key.key_id,
        dependent_id=dependent.resource_id,
        kind=dependent.kind,
        action=dependent.action,
        status=Status.VERIFIED,
        version=key.version,
    )


class RotationPlan(BaseModel):
    """What a run does: the keys to rotate (`rotations`; a field named `keys` would break
    `dict(model)`, which Prefect uses) and the rows of what it leaves alone."""

    rotation_id: str
    sets_policy: bool = Field(False, description="Each rotated key gets the asked policy.")
    rotations: list[PlannedKey] = Field(default_factory=list)
    skipped: list[RotationRow] = Field(default_factory=list)

    def rows(self) -> list[RotationRow]:
        """The plan as rows (what plan_only reports)."""
        rows = list(self.skipped)
        for key in self.rotations:
            action = "new version" if key.make_version else f"reuse {key.latest}"
            action += ", rotation policy" if self.sets_policy else ""
            rows.append(
                RotationRow(
                    key_id=key.key_id,
                    action=action,
                    status=Status.PLANNED,
                    reason=key.reason,
                    version="" if key.make_version else key.latest,
                )
            )
            rows += [
                RotationRow(
                    key_id=key.key_id,
                    dependent_id=d.resource_id,
                    kind=d.kind,
                    action=d.action,
                    status=Status.PLANNED,
                )
                for d in key.dependents
            ]
        return rows

    def moves(self, keys: list[RotationRow]) -> list[tuple[Dependent, RotationRow]]:
        """Every dependent with its key's row (`keys`: one per rotation, in order), taking
        the subscriptions in turn: ARM paces each subscription apart, so work sent in this
        order draws on every subscription's buckets at once instead of on one at a time."""
        queues: dict[str, list[tuple[Dependent, RotationRow]]] = {}
        for planned, row in zip(self.rotations, keys, strict=True):
            for d in planned.dependents:
                queues.setdefault(d.subscription_id.lower(), []).append((d, row))
        turns = zip_longest(*queues.values())
        return [move for turn in turns for move in turn if move is not None]

    def concurrency(self, request: FleetRotationRequest) -> int:
        """Moves at once: the request's `max_concurrency`, else `THREADS_PER_SUBSCRIPTION`
        for each subscription with dependents to move, at most `AUTO_THREADS_MAX`."""
        if request.max_concurrency is not None:
            return request.max_concurrency
        subscriptions = {
            d.subscription_id.lower() for key in self.rotations for d in key.dependents
        }
        return min(AUTO_THREADS_MAX, THREADS_PER_SUBSCRIPTION * max(1, len(subscriptions)))


class Share:
    """One task's part of the moves, handed to it as one object: Prefect does not search it
    for futures at each hand-off (a list of 2,235 moves took 0.16 s each time, measured), and
    Dask carries it whole (a value in Prefect's `quote` reaches a Dask worker as a tuple)."""

    __slots__ = ("moves",)

    def __init__(self, moves: list[tuple[Dependent, RotationRow]]) -> None:
        self.moves = moves

    def __iter__(self) -> Iterator[tuple[Dependent, RotationRow]]:
        return iter(self.moves)

    def __len__(self) -> int:
        return len(self.moves)


def shares(moves: list[tuple[Dependent, RotationRow]], n: int) -> list[Share]:
    """`moves` dealt into at most `n` shares, each subscription's moves one to each share in
    turn (the next subscription starting at the next share), each share in the order of
    `moves`. Every share draws on every subscription: a Dask worker paces to its part of each
    subscription's buckets (`clients.ratelimit.dask_share`), and a share without a
    subscription leaves its part unused (dealt move by move, 2 subscriptions on 2 workers ran
    at half ARM's rate: bench/fleet_rotation.py)."""
    dealt: list[list[tuple[Dependent, RotationRow]]] = [[] for _ in range(n)]
    turns: dict[str, int] = {}
    for move in moves:
        subscription = move[0].subscription_id.lower()
        turn = turns.setdefault(subscription, len(turns))
        dealt[turn % n].append(move)
        turns[subscription] = turn + 1
    return [Share(share) for share in dealt if share]


class FleetRotationResult(BaseModel):
    """What a run did (or, with plan_only, would do), row by row."""

    rotation_id: str
    plan_only: bool = Field(validation_alias=AliasChoices("plan_only", "dry_run"))
    rows: list[RotationRow]

    @property
    def keys_rotated(self) -> int:
        """Keys now at a new version."""
        return sum(r.kind == "key" and r.status == Status.ROTATED for r in self.rows)

    @property
    def failed(self) -> int:
        """Rows that failed."""
        return sum(r.status == Status.FAILED for r in self.rows)


def default_rotation_id(request: FleetRotationRequest, day: datetime) -> str:
    """A rotation id stable for the same selection on the same (UTC) day."""
    selection = request.model_dump(
        include={
            "subscriptions",
            "key_ids",
            "key_vaults",
            "tags",
            "older_than_days",
            "expiring_within_days",
        }
    )
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()[:10]
    return f"fleet-{digest}-{day:%Y%m%d}"


SET_TYPE = "microsoft.compute/diskencryptionsets"
REGISTRY_TYPE = "microsoft.containerregistry/registries"
CLUSTER_TYPE = "microsoft.containerservice/managedclusters"
# what a rotation discovers: its dependents, and the key stores a vault filter names
ROTATION_TYPES = (SET_TYPE, REGISTRY_TYPE, CLUSTER_TYPE, *STORE_KINDS)


def dependents(rows: Sequence[Row]) -> dict[str, list[Dependent]]:
    """The disk encryption sets, customer-key registries and KMS clusters of the discovery
    rows, by the versionless id (lower case) of the key they use."""
    found: dict[str, list[Dependent]] = {}
    for row in rows:
        kind = row["type"].lower()
        props = row.get("properties") or {}
        if kind == SET_TYPE:
            url = get(props, "activeKey", "keyUrl")
            if not url:
                continue
            dependent = Dependent(
                resource_id=row["id"],
                kind=DependentKind.DISK_ENCRYPTION_SET,
                key_url=url,
                follows_latest=bool(props.get("rotationToLatestKeyVersionEnabled")),
                confidential=props.get("encryptionType") == CONFIDENTIAL_SET,
            )
        elif kind == REGISTRY_TYPE:
            vault = get(props, "encryption", "keyVaultProperties") or {}
            url = vault.get("keyIdentifier")
            if get(props, "encryption", "status") != "enabled" or not url:
                continue
            dependent = Dependent(
                resource_id=row["id"],
                kind=DependentKind.REGISTRY,
                key_url=url,
                follows_latest=url.rstrip("/").count("/") == 4,  # https://vault/keys/name
                identity=vault.get("identity"),
            )
        elif kind == CLUSTER_TYPE:
            kms = get(props, "securityProfile", "azureKeyVaultKms") or {}
            if not kms.get("enabled") or not kms.get("keyId"):
                continue
            dependent = Dependent(
                resource_id=row["id"],
                kind=DependentKind.AKS_CLUSTER,
                key_url=kms["keyId"],
                follows_latest=experience_of(kms["keyId"]) == "new",
            )
        else:
            continue
        try:
            key = KeyId.parse(dependent.key_url).versionless.lower()
        except ValueError:  # not a Key Vault key (say, a Managed HSM one): not ours to rotate
            continue
        found.setdefault(key, []).append(dependent)
    return found


def candidate_keys(
    rows: Sequence[Row], request: FleetRotationRequest
) -> dict[str, list[Dependent]]:
    """The keys the selection names (or every used one) with their dependents, filtered by
    vault; keys are versionless ids as the dependents (or the request) spell them."""
    used = dependents(rows)
    wanted = [KeyId.parse(k).versionless for k in request.key_ids]
    keys: dict[str, list[Dependent]] = {}
    if wanted:
        for key in wanted:
            keys[key] = used.get(key.lower(), [])
    else:
        for deps in used.values():
            keys[KeyId.parse(deps[0].key_url).versionless] = deps
    if request.key_vaults:
        origins = _vault_origins(rows, request.key_vaults)
        keys = {k: d for k, d in keys.items() if KeyId.parse(k).vault_url.lower() in origins}
    return keys


def _vault_origins(rows: Sequence[Row], names: list[str]) -> set[str]:
    by_uri = vaults_by_uri(rows)
    by_name = {str(r.get("name", "")).lower(): uri for uri, r in by_uri.items()}
    origins = set()
    for name in names:
        value = name.rstrip("/").lower()
        origins.add(by_name.get(value, value))
    return origins


def plan_rotation(
    candidates: Mapping[str, list[Dependent]],
    facts: Mapping[str, KeyFacts],
    request: FleetRotationRequest,
    rotation_id: str,
    now: datetime,
) -> RotationPlan:
    """Which candidate keys rotate, and whether each gets a new version or reuses its latest:
    a latest version tagged with this rotation is reused (a re-run resumes), and so is one
    no dependent uses yet when no age or expiry criterion condemns it (a version a rotation
    policy made). Every other key becomes a skipped or failed row with its reason."""
    plan = RotationPlan(rotation_id=rotation_id, sets_policy=request.rotation_policy is not None)
    for key_id in sorted(candidates):
        held = [d for d in candidates[key_id] if d.confidential]
        plan.skipped += [_untouched(key_id, d, Status.SKIPPED, OFFLINE) for d in held]
        deps = [d for d in candidates[key_id] if not d.confidential]
        if held and not deps:
            plan.skipped.append(_row(key_id, Status.SKIPPED, "only confidential-VM sets use it"))
            continue
        fact = facts.get(key_id.lower())
        if fact is None or fact.latest is None:
            reason = fact.error if fact and fact.error else "the key could not be read"
            plan.skipped.append(_row(key_id, Status.FAILED, reason))
            continue
        if not fact.enabled:
            plan.skipped.append(_row(key_id, Status.SKIPPED, "its latest version is disabled"))
            continue
        resuming = fact.tags.get(ROTATION_TAG) == rotation_id
        if not resuming and any(fact.tags.get(k) != v for k, v in request.tags.items()):
            plan.skipped.append(_row(key_id, Status.SKIPPED, "its tags do not match"))
            continue
        due = due_reason(fact, request, now)
        if not resuming and due is None:
            plan.skipped.append(_row(key_id, Status.SKIPPED, "not old enough, nor near expiry"))
            continue
        pinned = {v for d in deps if (v := KeyId.parse(d.key_url).version)}
        unused_latest = bool(pinned) and KeyId.parse(fact.latest).version not in pinned
        criteria = request.older_than_days is not None or request.expiring_within_days is not None
        reuse = resuming or (unused_latest and not criteria)
        plan.rotations.append(
            PlannedKey(
                key_id=key_id,
                latest=fact.latest,
                make_version=not reuse,
                reason=f"resuming rotation {rotation_id}" if resuming else str(due),
                dependents=deps,
            )
        )
    return plan


CONFIDENTIAL_SET = "ConfidentialVmEncryptedWithCustomerKey"
OFFLINE = (
    "a confidential-VM set takes a new key version only while every VM on it is stopped: "
    "rotate it in a maintenance window with rotate-confidential-vm-key"
)
"""Why a fleet rotation holds a confidential-VM set back (Learn, "Confidential VM key
rotation": if one or more VMs aren't stopped, none of them gets the new key)."""


def hold_clusters(plan: RotationPlan, refused: Mapping[str, str]) -> RotationPlan:
    """The plan without the KMS clusters that may not rotate now (`refused`: the reason by
    cluster id, e.g. Secrets still sealed with the previous version: a second rotation would
    leave the cluster stuck with two key slots), each a failed row. A refused cluster that
    follows the latest version would pick a new version up by itself: its key does not
    rotate at all (a skipped row, its other dependents too)."""
    held = plan.model_copy(update={"rotations": [], "skipped": list(plan.skipped)})
    for key in plan.rotations:
        stopped = [d for d in key.dependents if d.resource_id in refused]
        held.skipped += [
            _untouched(key.key_id, d, Status.FAILED, refused[d.resource_id]) for d in stopped
        ]
        blocking = [d.name for d in stopped if d.follows_latest]
        if not blocking:
            rest = [d for d in key.dependents if d.resource_id not in refused]
            held.rotations.append(key.model_copy(update={"dependents": rest}))
            continue
        reason = f"cluster(s) {', '.join(blocking)} follow the latest version and may not rotate"
        held.skipped.append(_row(key.key_id, Status.SKIPPED, reason))
        held.skipped += [
            _untouched(key.key_id, d, Status.SKIPPED, "the key did not rotate")
            for d in key.dependents
            if d.resource_id not in refused
        ]
    return held


def _untouched(key_id: str, dependent: Dependent, status: Status, reason: str) -> RotationRow:
    """The row of a dependent the rotation leaves as it is."""
    return RotationRow(
        key_id=key_id,
        dependent_id=dependent.resource_id,
        kind=dependent.kind,
        action="none",
        status=status,
        reason=reason,
    )


def due_reason(fact: KeyFacts, request: FleetRotationRequest, now: datetime) -> str | None:
    """Why the key is due, or None; with neither criterion every selected key is due."""
    age, expiry = request.older_than_days, request.expiring_within_days
    if age is None and expiry is None:
        return "selected"
    if age is not None and fact.created and now - fact.created > timedelta(days=age):
        return f"latest version older than {age} days"
    if expiry is not None and fact.expires and fact.expires - now < timedelta(days=expiry):
        return f"latest version expires within {expiry} days"
    return None


def _row(key_id: str, status: Status, reason: str) -> RotationRow:
    return RotationRow(key_id=key_id, action="none", status=status, reason=reason)
