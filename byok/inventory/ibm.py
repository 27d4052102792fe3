"""From what an IBM Cloud account holds to findings (Prefect-free): Key Protect root keys and
their registrations, the encrypted images in COS (the wrapped DEK recorded in the object's
metadata by the IBM image flow), SoftLayer image templates and VPC images.

What links an image to its root key:
- an encrypted image in COS: its `byok-root-key-crn` and `byok-key-version` metadata;
- a SoftLayer template: the API does not return the root key it was imported with, so an
  encrypted template is linked to the encrypted object the IBM image flow names after it
  (`<template name>.vhd`, `IbmImageRequest.object_key`);
- a VPC image: `encryption_key.crn`, and the key version from the Key Protect registration
  VPC keeps for the image (https://cloud.ibm.com/docs/key-protect?topic=key-protect-view-protected-data)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from byok.inventory.models import Finding, KeyState, Kind, RotationPolicy

ACTIVE = 1  # Key Protect key state
DAYS_PER_MONTH = 30  # a Key Protect rotation policy's interval is in months
OBJECT_SUFFIX = ".vhd"  # the IBM image flow's default object name: '<image name>.vhd'
_UUID = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$", re.IGNORECASE)


class CosImage(BaseModel):
    """An object in COS with the byok metadata of an encrypted image (no key material)."""

    bucket: str
    key: str
    root_key_crn: str
    key_version: str | None = None

    def uri(self, region: str) -> str:
        """The object's cos:// URI (its resource id in the report)."""
        return f"cos://{region}/{self.bucket}/{self.key}"


class IbmAccountSnapshot(BaseModel):
    """What one inventory run read from an IBM Cloud account."""

    account_id: str
    region: str
    root_keys: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Key Protect root keys, each with its 'instanceCrn' and 'rotationPolicy'.",
    )
    registrations: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="Key Protect registrations by root key id."
    )
    cos_images: list[CosImage] = Field(default_factory=list)
    templates: list[dict[str, Any]] = Field(default_factory=list)
    vpc_images: list[dict[str, Any]] = Field(default_factory=list)
    unreadable: list[Finding] = Field(
        default_factory=list, description="What the credentials could not read (no-access)."
    )

    @property
    def resources(self) -> int:
        """How many resources were read."""
        found = len(self.root_keys) + len(self.cos_images)
        return found + len(self.templates) + len(self.vpc_images)


def key_protect_id(key_id: str) -> str | None:
    """The key id of a Key Protect key id or CRN (`crn:v1:…:kms:…:key:<id>`), else None."""
    parts = key_id.split(":")
    if key_id.startswith("crn:") and (len(parts) != 10 or parts[4] != "kms" or parts[8] != "key"):
        return None
    candidate = parts[-1]
    return candidate.lower() if _UUID.match(candidate) else None


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def root_key_state(key: dict[str, Any]) -> KeyState:
    """A root key's state: its current version and when it was made."""
    version = key.get("keyVersion") or {}
    return KeyState(
        key_id=key["crn"],
        version=version.get("id"),
        created=_time(version.get("creationDate") or key.get("creationDate")),
        enabled=key.get("state") == ACTIVE,
        expires=_time(key.get("expirationDate")),
        last_rotation=_time(key.get("lastRotateDate")),
        store_id=key.get("instanceCrn"),
        rotation_policy=_rotation_policy(key.get("rotationPolicy")),
    )


def _rotation_policy(rotation: dict[str, Any] | None) -> RotationPolicy | None:
    """A Key Protect rotation policy ({enabled, interval_month}) in days; a disabled one
    rotates nothing."""
    if not rotation:
        return None
    if not rotation.get("enabled", True):
        return RotationPolicy()
    return RotationPolicy(rotate_after_days=int(rotation["interval_month"]) * DAYS_PER_MONTH)


class _Keys:
    """The account's root keys by CRN (case-insensitive); an unknown CRN gets a key state
    without a version, which the `ibm-dek-current` control refuses."""

    def __init__(self, snapshot: IbmAccountSnapshot) -> None:
        self.by_crn = {k["crn"].lower(): root_key_state(k) for k in snapshot.root_keys}

    def __call__(self, crn: str) -> KeyState:
        return self.by_crn.get(crn.lower()) or KeyState(key_id=crn)


def findings(snapshot: IbmAccountSnapshot) -> list[Finding]:
    """Every root key, encrypted COS image, image template and private VPC image of the
    account, and every other resource registered with one of its root keys."""
    keys = _Keys(snapshot)
    base = {"scope": snapshot.account_id, "region": snapshot.region}
    found = list(snapshot.unreadable)
    for key in snapshot.root_keys:
        count = len(snapshot.registrations.get(key["id"]) or [])
        found.append(
            Finding(
                **base,
                resource_id=key["crn"],
                kind=Kind.IBM_ROOT_KEY,
                encryption_type="Key Protect root key",
                customer_key=True,
                key=keys(key["crn"]),
                note=f"{count} registered resource(s)",
            )
        )
    by_object = {i.key.lower(): i for i in snapshot.cos_images}
    for stored in snapshot.cos_images:
        found.append(
            Finding(
                **base,
                resource_id=stored.uri(snapshot.region),
                kind=Kind.IBM_IMAGE,
                encryption_type="DEK wrapped by a root key",
                customer_key=True,
                key=keys(stored.root_key_crn),
                wrapped_by_version=stored.key_version,
            )
        )
    for template in snapshot.templates:
        found.append(_template(template, by_object, keys, snapshot, base))
    vpc_crns = set()
    for image in snapshot.vpc_images:
        if image.get("visibility", "private") != "private":
            continue  # IBM's stock images
        vpc_crns.add(image["crn"])
        found.append(_vpc_image(image, snapshot, keys, base))
    for key in snapshot.root_keys:
        for registration in snapshot.registrations.get(key["id"]) or []:
            if registration["resourceCrn"] not in vpc_crns:
                found.append(
                    Finding(
                        **base,
                        resource_id=registration["resourceCrn"],
                        kind=Kind.IBM_REGISTERED,
                        encryption_type="registered with a root key",
                        customer_key=True,
                        key=keys(key["crn"]),
                        wrapped_by_version=(registration.get("keyVersion") or {}).get("id"),
                    )
                )
    return found


def template_id(template: dict[str, Any]) -> str:
    """A SoftLayer image template's resource id in the report."""
    return f"softlayer:image-template:{template['id']}"


def _template(
    template: dict[str, Any],
    by_object: dict[str, CosImage],
    keys: _Keys,
    snapshot: IbmAccountSnapshot,
    base: dict[str, Any],
) -> Finding:
    encrypted = "ENCRYPTED" in (template.get("encryptionAttributes") or [])
    source = by_object.get(f"{template['name']}{OBJECT_SUFFIX}".lower()) if encrypted else None
    common = {
        **base,
        "resource_id": template_id(template),
        "kind": Kind.IBM_IMAGE_TEMPLATE,
        "part": str(template["name"]),
        "customer_key": encrypted,
    }
    if not encrypted:
        return Finding(**common, encryption_type="not encrypted")
    if source is None:
        return Finding(
            **common,
            encryption_type="encrypted",
            note=f"no encrypted object {template['name']}{OBJECT_SUFFIX} records its root key",
        )
    return Finding(
        **common,
        encryption_type="encrypted",
        key=keys(source.root_key_crn),
        wrapped_by_version=source.key_version,
        via=source.uri(snapshot.region),
    )


def _vpc_image(
    image: dict[str, Any], snapshot: IbmAccountSnapshot, keys: _Keys, base: dict[str, Any]
) -> Finding:
    crn = (image.get("encryption_key") or {}).get("crn")
    common = {
        **base,
        "resource_id": image["crn"],
        "kind": Kind.IBM_VPC_IMAGE,
        "part": str(image.get("name", "")),
        "encryption_type": image.get("encryption"),
    }
    if not crn:
        return Finding(**common)
    registration = next(
        (
            r
            for r in snapshot.registrations.get(key_protect_id(crn) or crn) or []
            if r["resourceCrn"] == image["crn"]
        ),
        None,
    )
    return Finding(
        **common,
        customer_key=True,
        key=keys(crn),
        wrapped_by_version=((registration or {}).get("keyVersion") or {}).get("id"),
        note="" if registration else "no Key Protect registration records its key version",
    )
