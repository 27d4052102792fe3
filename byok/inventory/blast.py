"""Blast radius: everything a key protects, with the path from the key to it (key → set →
disk → VM; key → registry; key → cluster; key → set → image version region/LUN; key → set →
AKS StorageClass; root key → wrapped DEK in COS → image template; root key → VPC image).
What a person must see before disabling or deleting a key."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from pydantic import BaseModel

from byok.errors import InvalidRequest
from byok.inventory import ibm, storage_classes
from byok.inventory.discovery import Row, findings, set_ids
from byok.inventory.ibm import key_protect_id
from byok.inventory.models import Finding, KeyState, Kind
from byok.inventory.storage_classes import Classes
from byok.keyvault_ids import KeyId


class Dependent(BaseModel):
    """One thing the key protects, and how."""

    resource_id: str
    kind: Kind
    part: str
    path: list[str]


def parse_key(key_id: str) -> KeyId:
    """A Key Vault key id, versioned or not, or InvalidRequest naming `key_id`."""
    try:
        return KeyId.parse(key_id)
    except ValueError:
        raise InvalidRequest(
            "key_id", key_id, "must be a Key Vault key id https://<vault>/keys/<name>[/<version>]"
        ) from None


def parse_any_key(key_id: str) -> KeyId | str:
    """A Key Vault key id, or a Key Protect key id (from its id or CRN), or InvalidRequest."""
    found = key_protect_id(key_id)
    if found is not None:
        return found
    try:
        return KeyId.parse(key_id)
    except ValueError:
        raise InvalidRequest(
            "key_id",
            key_id,
            "must be a Key Vault key id https://<vault>/keys/<name>[/<version>], or a Key "
            "Protect key id or CRN crn:v1:…:kms:…:key:<id>",
        ) from None


def ibm_blast_radius(key_id: str, accounts: Iterable[ibm.IbmAccountSnapshot]) -> list[Dependent]:
    """The dependents of a Key Protect root key in the accounts read."""
    wanted = key_protect_id(key_id)
    found = [
        f for account in accounts for f in ibm.findings(account) if f.kind != Kind.IBM_ROOT_KEY
    ]
    return _dependents(found, lambda used: key_protect_id(used) == wanted)


def _dependents(found: Iterable[Finding], uses: Callable[[str], bool]) -> list[Dependent]:
    """The findings protected by a key `uses` accepts, each with its path from the key."""
    dependents = []
    for finding in found:
        if finding.key is None or not uses(finding.key.key_id):
            continue
        path = [finding.key.key_id]
        if finding.via:
            path.append(finding.via)
        path.append(finding.resource_id)
        if finding.attached_to:
            path.append(finding.attached_to)
        dependents.append(
            Dependent(
                resource_id=finding.resource_id, kind=finding.kind, part=finding.part, path=path
            )
        )
    return dependents


def blast_radius(
    key_id: str, rows: Sequence[Row], classes: Mapping[str, Classes] | None = None
) -> list[Dependent]:
    """The dependents of a key in the discovery rows (and the clusters' StorageClasses, by
    lower-cased cluster id): of every version of it when `key_id` has no version, else of
    that version only."""
    wanted = parse_key(key_id)

    def uses(url: str) -> bool:
        try:
            used = KeyId.parse(url)
        except ValueError:
            return False
        same_key = used.versionless.lower() == wanted.versionless.lower()
        return same_key and (wanted.version is None or used.version == wanted.version)

    sets = set_ids(rows)
    found = [f for row in rows for f in findings(row, sets, lambda url: KeyState(key_id=url))]
    found += [
        f
        for row in rows
        for f in storage_classes.findings(
            row, (classes or {}).get(row["id"].lower()), sets, lambda url: KeyState(key_id=url)
        )
    ]
    return _dependents(found, uses)
