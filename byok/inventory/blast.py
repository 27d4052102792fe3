"""Blast radius: everything a key protects, with the path from the key to it (key → set →
disk → VM; key → registry; key → cluster; key → set → image version region/LUN). What a
person must see before disabling or deleting a key."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from byok.errors import InvalidRequest
from byok.inventory.discovery import Row, findings, set_ids
from byok.inventory.models import KeyState, Kind
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


def blast_radius(key_id: str, rows: Sequence[Row]) -> list[Dependent]:
    """The dependents of a key in the discovery rows: of every version of it when `key_id`
    has no version, else of that version only."""
    wanted = parse_key(key_id)

    def uses(url: str) -> bool:
        try:
            used = KeyId.parse(url)
        except ValueError:
            return False
        same_key = used.versionless.lower() == wanted.versionless.lower()
        return same_key and (wanted.version is None or used.version == wanted.version)

    sets = set_ids(rows)
    found = []
    for row in rows:
        for finding in findings(row, sets, lambda url: KeyState(key_id=url)):
            if finding.key is None or not uses(finding.key.key_id):
                continue
            path = [finding.key.key_id]
            if finding.via:
                path.append(finding.via)
            path.append(finding.resource_id)
            if finding.attached_to:
                path.append(finding.attached_to)
            found.append(
                Dependent(
                    resource_id=finding.resource_id,
                    kind=finding.kind,
                    part=finding.part,
                    path=path,
                )
            )
    return found
