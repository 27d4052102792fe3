"""A realistic fleet for demos and benchmarks, made through the real SDKs: per subscription one
resource group with a purge-protected vault and three keys, disk encryption sets, disks and
registries, some compliant and some not.

The mix, per subscription (names fixed, so a re-run makes nothing twice):
- keys `k0` (rotation policy), `k1` (no rotation policy, two versions), `k2` (rotation policy);
- disk encryption sets, in turn: k0 latest version; k0 with `rotationToLatestKeyVersionEnabled`;
  k1's old version; k1 latest. The fourth set's grant on the vault is revoked after creation;
- registries, in turn: Premium on k2's version (versioned), Premium on k2 (versionless, follows
  rotation), Basic on platform keys; the first two through the user-assigned identity `id-fleet`;
- disks: a quarter on platform keys, the rest on a set picked by a seeded random draw."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import KeyClient, KeyRotationLifetimeAction, KeyRotationPolicy

from blocks.azure import AzureCredentials
from clients.azure import AzureClients

GROUP = "rg-fleet"
IDENTITY = "id-fleet"
KEY_OPERATIONS = ["get", "wrapKey", "unwrapKey"]
# (key, version: "old" or "latest", automatic rotation) per set, in turn
SET_KINDS = (
    ("k0", "latest", False),
    ("k0", "latest", True),
    ("k1", "old", False),
    ("k1", "latest", False),
)
REVOKED_SET = 3  # index of the set whose vault grant is revoked
PLATFORM_SHARE = 0.25
MIN_PER_SUBSCRIPTION = 1 + 1 + len(SET_KINDS) + 3 + 1  # vault, identity, sets, registries, disk
WORKERS = 8
TYPES = {
    "Microsoft.KeyVault/vaults": "vaults",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "identities",
    "Microsoft.Compute/diskEncryptionSets": "disk_encryption_sets",
    "Microsoft.Compute/disks": "disks",
    "Microsoft.ContainerRegistry/registries": "registries",
}


@dataclass(frozen=True)
class FleetSeed:
    """What the fleet holds (made now or by an earlier run): `counts` per kind (ARM
    resources, and `keys`), `created` the ARM resources this run made."""

    subscriptions: list[str]
    counts: dict[str, int]
    key_ids: list[str]
    des_ids: list[str]
    registry_ids: list[str]
    created: int

    @property
    def resources(self) -> int:
        """ARM resources in the fleet (keys are not ARM resources)."""
        return sum(n for kind, n in self.counts.items() if kind != "keys")


@dataclass
class _Plan:
    """The names one subscription's fleet gets."""

    subscription: str
    per_subscription: int
    seed: int
    revoke: bool = True  # withdraw the fourth set's grant
    vault: str = ""
    sets: list[str] = field(default_factory=list)
    registries: list[str] = field(default_factory=list)
    disks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = self.subscription.replace("-", "")[-12:]
        self.vault = f"kv-fleet-{tag}"
        n_sets = max(self.per_subscription // 10, len(SET_KINDS))
        n_registries = max(self.per_subscription // 20, 3)
        self.sets = [f"des-{i}" for i in range(n_sets)]
        self.registries = [f"cr{tag}x{i}" for i in range(n_registries)]
        n_disks = self.per_subscription - 2 - n_sets - n_registries
        self.disks = [f"disk-{i}" for i in range(max(n_disks, 1))]


def seed_fleet(
    block: AzureCredentials,
    *,
    subscriptions: list[str],
    resources: int,
    region: str = "westeurope",
    seed: int = 0,
    revoke: bool = True,
) -> FleetSeed:
    """Make (or complete) the fleet: about `resources` ARM resources spread over
    `subscriptions`, which must exist; the seeded draw of disk encryption is `seed`'s;
    `revoke`: the fourth set of each subscription loses its grant (its rotation fails)."""
    if not subscriptions:
        raise ValueError("subscriptions = []: at least one subscription is needed")
    per_sub = max(resources // len(subscriptions), MIN_PER_SUBSCRIPTION)
    plans = [_Plan(sub, per_sub, seed, revoke) for sub in subscriptions]
    # Vaults and keys one subscription after the other: the emulator deadlocks when a vault
    # PUT meets a key operation (see the report); the rest in parallel.
    done = [_Subscription(block, plan, region).store() for plan in plans]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(_Subscription.users, done))
        disks = [(part, i) for part in done for i in range(len(part.plan.disks))]
        list(pool.map(lambda job: job[0].disk(job[1]), disks))
    counts: Counter[str] = Counter()
    for part in done:
        counts.update(part.counts)
    return FleetSeed(
        subscriptions=list(subscriptions),
        counts=dict(counts),
        key_ids=[k for part in done for k in part.key_ids],
        des_ids=[d for part in done for d in part.des_ids],
        registry_ids=[r for part in done for r in part.registry_ids],
        created=sum(part.created for part in done),
    )


class _Subscription:
    """One subscription's share of the fleet."""

    def __init__(self, block: AzureCredentials, plan: _Plan, region: str) -> None:
        self.clients = AzureClients.of(block, plan.subscription)
        self.plan, self.region = plan, region
        self.prefix = f"/subscriptions/{plan.subscription}/resourceGroups/{GROUP}/providers"
        self.existing: set[str] = set()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.created = 0
        self.key_ids: list[str] = []
        self.des_ids: list[str] = []
        self.registry_ids: list[str] = []
        self.vault: Any = None
        self.versions: dict[str, list[str]] = {}

    def store(self) -> _Subscription:
        """The resource group, the vault and its keys (skipping what exists)."""
        resources = self.clients.resources()
        resources.resource_groups.create_or_update(GROUP, {"location": self.region})
        self.existing = {
            str(r.id).lower() for r in resources.resources.list_by_resource_group(GROUP)
        }
        self.vault = self._vault()
        keys = self.clients.keys(str(self.vault.properties.vault_uri))
        self.versions = {name: self._key(keys, name) for name in ("k0", "k1", "k2")}
        return self

    def users(self) -> _Subscription:
        """The identity, the sets, their grants and the registries (skipping what exists)."""
        msi = self.clients.msi().user_assigned_identities
        identity = self._ensure(
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            IDENTITY,
            lambda: msi.create_or_update(GROUP, IDENTITY, {"location": self.region}),
        )
        grants = [identity.principal_id] if identity else []
        revoked = ""
        with ThreadPoolExecutor(WORKERS) as pool:
            made = pool.map(
                lambda job: self._set(self.vault.id, self.versions, job[0], job[1]),
                enumerate(self.plan.sets),
            )
            for i, des in enumerate(list(made)):
                if des is not None:
                    grants.append(des.identity.principal_id)
                    if i == REVOKED_SET and self.plan.revoke:
                        revoked = des.identity.principal_id
            self._grant(grants, revoked)
            uai = msi.get(GROUP, IDENTITY)
            k2 = self.versions["k2"][-1]
            registries = enumerate(self.plan.registries)
            list(pool.map(lambda job: self._registry(job[0], job[1], uai, k2), registries))
        return self

    # -- each kind -------------------------------------------------------------------------
    def _ensure(self, kind: str, name: str, create: Callable[[], Any]) -> Any:
        """Create unless it exists; returns what was made (None if it existed)."""
        rid = f"{self.prefix}/{kind}/{name}"
        with self.lock:
            self.counts[TYPES[kind]] += 1
            if kind == "Microsoft.Compute/diskEncryptionSets":
                self.des_ids.append(rid)
            if kind == "Microsoft.ContainerRegistry/registries":
                self.registry_ids.append(rid)
        if rid.lower() in self.existing:
            return None
        made = create()
        made = made.result() if hasattr(made, "result") else made
        with self.lock:
            self.created += 1
        return made

    def _vault(self) -> Any:
        kv = self.clients.keyvault_management()
        self._ensure(
            "Microsoft.KeyVault/vaults",
            self.plan.vault,
            lambda: kv.vaults.begin_create_or_update(GROUP, self.plan.vault, self._vault_body()),
        )
        return kv.vaults.get(GROUP, self.plan.vault)

    def _vault_body(self) -> Any:  # a JSON body: the SDK's overloads name only models
        tenant = str(self.clients.block.tenant_id)
        return {
            "location": self.region,
            "properties": {
                "tenantId": tenant,
                "sku": {"family": "A", "name": "standard"},
                "enableSoftDelete": True,
                "enablePurgeProtection": True,
                "enableRbacAuthorization": False,
                "accessPolicies": [
                    {
                        "tenantId": tenant,
                        "objectId": self._caller_object_id(),
                        "permissions": {"keys": ["all"]},
                    }
                ],
            },
        }

    def _caller_object_id(self) -> str:
        """The object id of the identity the block signs in as (its token's `oid` claim)."""
        token = self.clients.credential.get_token(self.clients.endpoints.arm_scope).token
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["oid"])

    def _key(self, keys: KeyClient, name: str) -> list[str]:
        """The key's version ids, the latest last, made as the mix wants (idempotent)."""
        wanted = 2 if name == "k1" else 1
        try:
            have = list(keys.list_properties_of_key_versions(name))
        except ResourceNotFoundError:
            have = []
        for _ in range(wanted - len(have)):
            keys.create_rsa_key(name, size=2048)
        if len(have) < wanted:
            have = list(keys.list_properties_of_key_versions(name))
            if name != "k1":
                policy = KeyRotationPolicy(
                    lifetime_actions=[
                        KeyRotationLifetimeAction("Rotate", time_after_create="P90D"),
                        KeyRotationLifetimeAction("Notify", time_before_expiry="P30D"),
                    ],
                    expires_in="P1Y",
                )
                keys.update_key_rotation_policy(name, policy)
        self.counts["keys"] += 1
        latest = str(keys.get_key(name).id)  # versions made in one second sort either way
        self.key_ids.append(latest.rsplit("/", 1)[0])
        return [str(p.id) for p in have if str(p.id) != latest] + [latest]

    def _set(self, vault_id: str, versions: dict[str, list[str]], i: int, name: str) -> Any:
        key, which, auto = SET_KINDS[i % len(SET_KINDS)]
        url = versions[key][0 if which == "old" else -1]
        body: Any = {
            "location": self.region,
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "activeKey": {"keyUrl": url, "sourceVault": {"id": vault_id}},
                "rotationToLatestKeyVersionEnabled": auto,
            },
        }
        compute = self.clients.compute()
        return self._ensure(
            "Microsoft.Compute/diskEncryptionSets",
            name,
            lambda: compute.disk_encryption_sets.begin_create_or_update(GROUP, name, body),
        )

    def _grant(self, principals: Iterable[str], revoked: str) -> None:
        """Key access for the new identities; then the revoked set's grant withdrawn."""
        kv = self.clients.keyvault_management()
        tenant = str(self.clients.block.tenant_id)

        def policies(ids: Iterable[str]) -> Any:
            entries = [
                {"tenantId": tenant, "objectId": p, "permissions": {"keys": KEY_OPERATIONS}}
                for p in ids
            ]
            return {"properties": {"accessPolicies": entries}}

        principals = list(principals)
        if principals:
            kv.vaults.update_access_policy(GROUP, self.plan.vault, "add", policies(principals))
        if revoked:
            kv.vaults.update_access_policy(GROUP, self.plan.vault, "remove", policies([revoked]))

    def _registry(self, i: int, name: str, uai: Any, k2_version: str) -> None:
        body: dict[str, Any] = {"location": self.region, "sku": {"name": "Basic"}}
        if i % 3 < 2:
            key_id = k2_version if i % 3 == 0 else k2_version.rsplit("/", 1)[0]
            body = {
                "location": self.region,
                "sku": {"name": "Premium"},
                "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai.id: {}}},
                "properties": {
                    "encryption": {
                        "status": "enabled",
                        "keyVaultProperties": {"keyIdentifier": key_id, "identity": uai.client_id},
                    }
                },
            }
        registries = self.clients.container_registry().registries
        self._ensure(
            "Microsoft.ContainerRegistry/registries",
            name,
            lambda: registries.begin_create(GROUP, name, body),
        )

    def disk(self, i: int) -> None:
        """Disk `i` (callable from several threads at once)."""
        name = self.plan.disks[i]
        draw = random.Random(f"{self.plan.seed}/{self.plan.subscription}/{name}")
        encryption: dict[str, str] = {"type": "EncryptionAtRestWithPlatformKey"}
        if draw.random() >= PLATFORM_SHARE:
            encryption = {
                "type": "EncryptionAtRestWithCustomerKey",
                "diskEncryptionSetId": f"{self.prefix}/Microsoft.Compute/diskEncryptionSets/"
                + draw.choice(self.plan.sets),
            }
        body: Any = {
            "location": self.region,
            "properties": {
                "creationData": {"createOption": "Empty"},
                "diskSizeGB": 4,
                "encryption": encryption,
            },
        }
        disks = self.clients.compute().disks
        self._ensure(
            "Microsoft.Compute/disks", name, lambda: disks.begin_create_or_update(GROUP, name, body)
        )
