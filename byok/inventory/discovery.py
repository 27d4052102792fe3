"""From Resource Graph rows (ARM's resource shapes) to findings: what each resource is
encrypted with, down to an image version's regions and LUNs and a VM's disks.

The query the inventory sends (`DISCOVERY_QUERY`) selects the types below; each row becomes
one or more findings. Key facts (age, expiry, rotation policy, the vault's protection) come
from Key Vault, looked up once per key by the caller and passed in as `keys`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from byok.inventory.models import Finding, KeyState, Kind

TYPES: dict[str, Kind] = {
    "microsoft.compute/diskencryptionsets": Kind.DISK_ENCRYPTION_SET,
    "microsoft.compute/disks": Kind.DISK,
    "microsoft.compute/virtualmachines": Kind.VIRTUAL_MACHINE,
    "microsoft.compute/galleries/images/versions": Kind.IMAGE_VERSION,
    "microsoft.containerregistry/registries": Kind.REGISTRY,
    "microsoft.containerservice/managedclusters": Kind.AKS_CLUSTER,
}
VAULT_TYPE = "microsoft.keyvault/vaults"
DISCOVERY_QUERY = (
    "Resources | where type in~ ("
    + ", ".join(f"'{t}'" for t in [*TYPES, VAULT_TYPE])
    + ") | project id, name, type, location, subscriptionId, managedBy, identity, properties"
    + " | order by id asc"
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


def findings(row: Row, sets: Mapping[str, Row], keys: KeyLookup) -> Iterator[Finding]:
    """The findings of one Resource Graph row; `sets` holds every disk encryption set row
    by lower-cased id (disks, VMs, image versions and clusters point at sets), `keys` gives
    a key's state by key URL."""
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
        yield _des_finding(row, base, keys)
    elif kind is Kind.DISK:
        yield _via_set(
            {**base, "attached_to": row.get("managedBy") or None},
            get(props, "encryption", "diskEncryptionSetId"),
            sets,
            keys,
            encryption_type=get(props, "encryption", "type"),
        )
    elif kind is Kind.VIRTUAL_MACHINE:
        storage = props.get("storageProfile") or {}
        os_set = get(storage, "osDisk", "managedDisk", "diskEncryptionSet", "id")
        yield _via_set({**base, "part": "os-disk"}, os_set, sets, keys)
        for disk in storage.get("dataDisks") or []:
            data_set = get(disk, "managedDisk", "diskEncryptionSet", "id")
            yield _via_set({**base, "part": f"lun-{disk.get('lun')}"}, data_set, sets, keys)
    elif kind is Kind.IMAGE_VERSION:
        yield from _image_version(base, props, sets, keys)
    elif kind is Kind.REGISTRY:
        yield _registry(row, base, keys)
    elif kind is Kind.AKS_CLUSTER:
        yield from _cluster(base, props, sets, keys)


def _des_finding(row: Row, base: dict[str, Any], keys: KeyLookup) -> Finding:
    props = row.get("properties") or {}
    key_url = get(props, "activeKey", "keyUrl")
    key = keys(key_url) if key_url else None
    if key is not None and props.get("lastKeyRotationTimestamp"):
        key = key.model_copy(update={"last_rotation": _time(props["lastKeyRotationTimestamp"])})
    return Finding(
        **base,
        encryption_type=props.get("encryptionType"),
        customer_key=True,
        key=key,
        identity=get(row, "identity", "principalId"),
        note="automatic key rotation" if props.get("rotationToLatestKeyVersionEnabled") else "",
    )


def _via_set(
    base: dict[str, Any],
    set_id: str | None,
    sets: Mapping[str, Row],
    keys: KeyLookup,
    encryption_type: str | None = None,
) -> Finding:
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
        yield _via_set({**where, "part": f"{region}/os-disk"}, os_set, sets, keys)
        for data in encryption.get("dataDiskImages") or []:
            part = f"{region}/lun-{data.get('lun')}"
            yield _via_set({**where, "part": part}, data.get("diskEncryptionSetId"), sets, keys)


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
    base: dict[str, Any], props: Row, sets: Mapping[str, Row], keys: KeyLookup
) -> Iterator[Finding]:
    yield _via_set({**base, "part": "node-os-disks"}, props.get("diskEncryptionSetID"), sets, keys)
    kms = get(props, "securityProfile", "azureKeyVaultKms") or {}
    if kms.get("enabled"):
        key_url = kms.get("keyId")
        yield Finding(
            **base,
            part="kms-etcd",
            encryption_type="KMS etcd encryption",
            customer_key=True,
            key=keys(key_url) if key_url else None,
        )


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
            get(props, "securityProfile", "azureKeyVaultKms", "keyId"),
        ):
            if url:
                urls.add(url)
    return urls


def vaults_by_uri(rows: Sequence[Row]) -> dict[str, Row]:
    """The key vault rows by their data-plane URI (lower-cased, no trailing slash)."""
    return {
        str(get(r, "properties", "vaultUri")).rstrip("/").lower(): r
        for r in rows
        if r["type"].lower() == VAULT_TYPE and get(r, "properties", "vaultUri")
    }


def vault_for(key_url: str, vaults: Mapping[str, Row]) -> Row | None:
    """The vault that holds a key (by the key URL's origin)."""
    return vaults.get("/".join(key_url.split("/")[:3]).lower())


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
