"""From Resource Graph rows (ARM's resource shapes) to findings: what each resource is
encrypted with, down to an image version's regions and LUNs and a VM's disks.

The query the inventory sends (`discovery_query()`) selects the types below; each row becomes
one or more findings. Key facts (age, expiry, rotation policy, the vault's protection) come
from Key Vault, looked up once per key by the caller and passed in as `keys`.

A VM's power state is where Resource Graph puts it,
`properties.extended.instanceView.powerState.code` (the caller fills it in from ARM where the
row lacks it): a confidential VM set's key changes only while every VM on it is
deallocated."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from byok.aks_kms import TAG_CURRENT, TAG_PREVIOUS, TAG_ROTATED_AT, TAG_ROTATION
from byok.inventory.models import Finding, KeyState, Kind
from byok.keyvault_ids import KeyId

TYPES: dict[str, Kind] = {
    "microsoft.compute/diskencryptionsets": Kind.DISK_ENCRYPTION_SET,
    "microsoft.compute/disks": Kind.DISK,
    "microsoft.compute/virtualmachines": Kind.VIRTUAL_MACHINE,
    "microsoft.compute/galleries/images/versions": Kind.IMAGE_VERSION,
    "microsoft.containerregistry/registries": Kind.REGISTRY,
    "microsoft.containerservice/managedclusters": Kind.AKS_CLUSTER,
}
VAULT_TYPE = "microsoft.keyvault/vaults"
HSM_TYPE = "microsoft.keyvault/managedhsms"
STORE_KINDS = {VAULT_TYPE: "key-vault", HSM_TYPE: "managed-hsm"}
# Data-plane host labels: https://<vault>.vault.<suffix>, https://<hsm>.managedhsm.<suffix>
# (https://learn.microsoft.com/azure/key-vault/keys/about-keys).
_HOST_LABELS = {"vault": "key-vault", "managedhsm": "managed-hsm"}
CONFIDENTIAL_SET = "ConfidentialVmEncryptedWithCustomerKey"
DEALLOCATED = "PowerState/deallocated"
POWER_STATE = ("properties", "extended", "instanceView", "powerState", "code")
ALL_TYPES = (*TYPES, *STORE_KINDS)


def discovery_query(types: Sequence[str] = ALL_TYPES) -> str:
    """The Resource Graph query for the rows of `types` (lower-case resource types)."""
    return (
        "Resources | where type in~ ("
        + ", ".join(f"'{t}'" for t in types)
        + ") | project id, name, type, location, subscriptionId, managedBy, identity, tags,"
        + " properties | order by id asc"
    )


Row = Mapping[str, Any]
KeyLookup = Callable[[str], KeyState | None]


def get(data: Any, *path: str) -> Any:
    """A nested value, or None."""
    for name in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(name)
    return data


def findings(
    row: Row,
    sets: Mapping[str, Row],
    keys: KeyLookup,
    blocking: Mapping[str, list[str]] | None = None,
) -> Iterator[Finding]:
    """The findings of one Resource Graph row; `sets` holds every disk encryption set row
    by lower-cased id (disks, VMs, image versions and clusters point at sets), `keys` gives
    a key's state by key URL, `blocking` the VMs not deallocated per confidential set
    (`blocking_vms`)."""
    kind = TYPES.get(row["type"].lower())
    if kind is None:
        return
    base = {
        "resource_id": row["id"],
        "kind": kind,
        "scope": row["subscriptionId"],
        "region": row.get("location") or "",
    }
    props = row.get("properties") or {}
    if kind is Kind.DISK_ENCRYPTION_SET:
        yield _des_finding(row, base, keys, (blocking or {}).get(row["id"].lower(), []))
    elif kind is Kind.DISK:
        yield via_set(
            {**base, "attached_to": row.get("managedBy") or None},
            get(props, "encryption", "diskEncryptionSetId"),
            sets,
            keys,
            encryption_type=get(props, "encryption", "type"),
        )
    elif kind is Kind.VIRTUAL_MACHINE:
        yield from _virtual_machine(base, props, sets, keys)
    elif kind is Kind.IMAGE_VERSION:
        yield from _image_version(base, props, sets, keys)
    elif kind is Kind.REGISTRY:
        yield _registry(row, base, keys)
    elif kind is Kind.AKS_CLUSTER:
        yield from _cluster(base, row, sets, keys)


def _des_finding(row: Row, base: dict[str, Any], keys: KeyLookup, blocking: list[str]) -> Finding:
    props = row.get("properties") or {}
    key_url = get(props, "activeKey", "keyUrl")
    key = keys(key_url) if key_url else None
    if key is not None and props.get("lastKeyRotationTimestamp"):
        key = key.model_copy(update={"last_rotation": _time(props["lastKeyRotationTimestamp"])})
    federated = str(props.get("federatedClientId") or "")
    return Finding(
        **base,
        encryption_type=props.get("encryptionType"),
        customer_key=True,
        key=key,
        identity=get(row, "identity", "principalId"),
        federated_client_id=None if federated in ("", "None") else federated,
        blocks_rotation=blocking,
        note="automatic key rotation" if props.get("rotationToLatestKeyVersionEnabled") else "",
    )


def _disk_set(disk: Row) -> str | None:
    """The set of a VM disk: `managedDisk.diskEncryptionSet`, or for a confidential VM's OS
    disk `managedDisk.securityProfile.diskEncryptionSet`."""
    managed = disk.get("managedDisk") or {}
    return get(managed, "diskEncryptionSet", "id") or get(
        managed, "securityProfile", "diskEncryptionSet", "id"
    )


def _virtual_machine(
    base: dict[str, Any], props: Row, sets: Mapping[str, Row], keys: KeyLookup
) -> Iterator[Finding]:
    """The VM itself (part `host`: encryption at host, security type), then each disk."""
    security = props.get("securityProfile") or {}
    yield Finding(
        **base,
        part="host",
        encryption_at_host=bool(security.get("encryptionAtHost")),
        security_type=security.get("securityType"),
    )
    storage = props.get("storageProfile") or {}
    disks = [("os-disk", storage.get("osDisk") or {})]
    disks += [(f"lun-{d.get('lun')}", d) for d in storage.get("dataDisks") or []]
    for part, disk in disks:
        security_type = get(disk, "managedDisk", "securityProfile", "securityEncryptionType")
        where = {**base, "part": part, "security_type": security_type}
        yield via_set(where, _disk_set(disk), sets, keys)


def via_set(
    base: dict[str, Any],
    set_id: str | None,
    sets: Mapping[str, Row],
    keys: KeyLookup,
    encryption_type: str | None = None,
) -> Finding:
    """A finding encrypted through the set `set_id` (its key from the set's row), or with
    platform-managed keys when there is none."""
    if not set_id:
        return Finding(**base, encryption_type=encryption_type or "EncryptionAtRestWithPlatformKey")
    des = sets.get(set_id.lower())
    props = (des or {}).get("properties") or {}
    key_url = get(props, "activeKey", "keyUrl")
    return Finding(
        **base,
        encryption_type=encryption_type or props.get("encryptionType"),
        customer_key=True,
        key=keys(key_url) if key_url else None,
        via=set_id,
        note="" if des else "its disk encryption set is not visible",
    )


def _image_version(
    base: dict[str, Any], props: Row, sets: Mapping[str, Row], keys: KeyLookup
) -> Iterator[Finding]:
    for target in get(props, "publishingProfile", "targetRegions") or []:
        region = str(target.get("name", "")).replace(" ", "").lower()
        where = {**base, "region": region}
        encryption = target.get("encryption") or {}
        os_set = get(encryption, "osDiskImage", "diskEncryptionSetId")
        yield via_set({**where, "part": f"{region}/os-disk"}, os_set, sets, keys)
        for data in encryption.get("dataDiskImages") or []:
            part = f"{region}/lun-{data.get('lun')}"
            yield via_set({**where, "part": part}, data.get("diskEncryptionSetId"), sets, keys)


def _registry(row: Row, base: dict[str, Any], keys: KeyLookup) -> Finding:
    encryption = get(row, "properties", "encryption") or {}
    vault = encryption.get("keyVaultProperties") or {}
    key_url = vault.get("versionedKeyIdentifier") or vault.get("keyIdentifier")
    enabled = encryption.get("status") == "enabled" and bool(key_url)
    key = keys(key_url) if enabled and key_url else None
    if key is not None and vault.get("lastKeyRotationTimestamp"):
        key = key.model_copy(update={"last_rotation": _time(vault["lastKeyRotationTimestamp"])})
    return Finding(
        **base,
        encryption_type="customer-managed key" if enabled else "service-managed key",
        customer_key=enabled,
        key=key,
        identity=vault.get("identity"),
        note="follows new key versions" if vault.get("keyIdentifier", "").count("/") == 4 else "",
    )


def _cluster(
    base: dict[str, Any], row: Row, sets: Mapping[str, Row], keys: KeyLookup
) -> Iterator[Finding]:
    """The node OS disks' set, the KMS key of etcd, and each node pool's encryption at
    host (the pool's own resource id)."""
    props = row.get("properties") or {}
    yield via_set({**base, "part": "node-os-disks"}, props.get("diskEncryptionSetID"), sets, keys)
    yield _kms(base, row, keys)
    for pool in props.get("agentPoolProfiles") or []:
        yield Finding(
            **{
                **base,
                "resource_id": f"{row['id']}/agentPools/{pool.get('name')}",
                "kind": Kind.AKS_NODE_POOL,
            },
            encryption_at_host=bool(pool.get("enableEncryptionAtHost")),
        )


def kms_key_url(row: Row) -> str | None:
    """The versioned KMS key a cluster seals Secrets with: the version the KMS flows record
    in the cluster's tag (the new experience names a versionless key), else its `keyId`."""
    kms = get(row, "properties", "securityProfile", "azureKeyVaultKms") or {}
    key_id = kms.get("keyId") if kms.get("enabled") else None
    if not key_id:
        return None
    recorded = (row.get("tags") or {}).get(TAG_CURRENT)
    if recorded and _same_key(recorded, key_id):
        return str(recorded)
    return str(key_id)


def _kms(base: dict[str, Any], row: Row, keys: KeyLookup) -> Finding:
    """The KMS etcd finding: the key version in use, the previous one still in the plugin's
    second slot (cluster tags of the KMS flows), the last rotation and a cluster not
    settled (Updating, or Failed with the key's error)."""
    props = row.get("properties") or {}
    key_url = kms_key_url(row)
    if key_url is None:
        return Finding(**base, part="kms-etcd", encryption_type="platform-managed keys")
    tags = row.get("tags") or {}
    key_id = str(get(props, "securityProfile", "azureKeyVaultKms", "keyId"))
    experience = "legacy" if key_id.rstrip("/").count("/") == 5 else "new"  # …/keys/k/<v>
    rotation = []
    if tags.get(TAG_ROTATED_AT):
        rotation.append(f"rotation {tags.get(TAG_ROTATION) or '-'} at {tags[TAG_ROTATED_AT]}")
    state = props.get("provisioningState")
    if state not in (None, "Succeeded"):
        error = get(props, "status", "provisioningError", "code")
        rotation.append(f"cluster {state}" + (f": {error}" if error else ""))
    return Finding(
        **base,
        part="kms-etcd",
        encryption_type=f"KMS etcd encryption ({experience} experience)",
        customer_key=True,
        key=keys(key_url),
        previous_key_version=tags.get(TAG_PREVIOUS),
        rotation="; ".join(rotation) or None,
    )


def _same_key(url: str, other: str) -> bool:
    try:
        return KeyId.parse(url).versionless.lower() == KeyId.parse(other).versionless.lower()
    except ValueError:
        return False


def power_state(row: Row) -> str | None:
    """A VM row's power state code (`PowerState/running`, …), where Resource Graph puts it."""
    return get(row, *POWER_STATE)


def confidential_vms(rows: Sequence[Row]) -> list[Row]:
    """The VM rows with a disk on a confidential VM set."""
    sets = set_ids(rows)
    return [
        row
        for row in rows
        if row["type"].lower() == "microsoft.compute/virtualmachines"
        and any(
            get(sets.get(set_id.lower()), "properties", "encryptionType") == CONFIDENTIAL_SET
            for set_id in _vm_sets(row)
        )
    ]


def blocking_vms(rows: Sequence[Row]) -> dict[str, list[str]]:
    """Per confidential set (lower-cased id): its VMs not deallocated (an unknown power state
    counts), which keep its key from changing."""
    blocking: dict[str, list[str]] = {}
    for row in confidential_vms(rows):
        if power_state(row) == DEALLOCATED:
            continue
        for set_id in _vm_sets(row):
            blocking.setdefault(set_id.lower(), []).append(row["id"])
    return blocking


def _vm_sets(row: Row) -> set[str]:
    storage = get(row, "properties", "storageProfile") or {}
    disks = [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]
    return {s for s in (_disk_set(d) for d in disks) if s}


def set_ids(rows: Sequence[Row]) -> dict[str, Row]:
    """The disk encryption set rows by lower-cased id."""
    return {
        r["id"].lower(): r
        for r in rows
        if r["type"].lower() == "microsoft.compute/diskencryptionsets"
    }


def key_urls(rows: Sequence[Row]) -> set[str]:
    """Every key URL the rows' sets, registries and clusters use (to look each up once)."""
    urls = set()
    for row in rows:
        props = row.get("properties") or {}
        for url in (
            get(props, "activeKey", "keyUrl"),
            get(props, "encryption", "keyVaultProperties", "versionedKeyIdentifier")
            or get(props, "encryption", "keyVaultProperties", "keyIdentifier"),
            kms_key_url(row),
        ):
            if url:
                urls.add(url)
    return urls


def vaults_by_uri(rows: Sequence[Row]) -> dict[str, Row]:
    """The key vault and managed HSM rows by their data-plane URI (lower-cased, no trailing
    slash)."""
    found = {}
    for row in rows:
        kind = row["type"].lower()
        uri = get(row, "properties", "hsmUri" if kind == HSM_TYPE else "vaultUri")
        if kind in STORE_KINDS and uri:
            found[str(uri).rstrip("/").lower()] = row
    return found


def store_kind(key_url: str, store: Row | None) -> str | None:
    """'key-vault' or 'managed-hsm': the store row's type, else the key URL's host label."""
    if store is not None:
        return STORE_KINDS.get(store["type"].lower())
    labels = (KeyId.parse(key_url).vault_url.split("/")[2]).split(".")
    return _HOST_LABELS.get(labels[1]) if len(labels) > 2 else None


def vault_for(key_url: str, vaults: Mapping[str, Row]) -> Row | None:
    """The vault that holds a key (by the key URL's origin)."""
    return vaults.get("/".join(key_url.split("/")[:3]).lower())


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
