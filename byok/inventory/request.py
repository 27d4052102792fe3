"""The inventory flow's request and result (Prefect-free, checked before any call)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from byok.errors import InvalidRequest
from byok.inventory.blast import Dependent, parse_key
from byok.inventory.report import Change

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _subscription_ids(values: list[str]) -> list[str]:
    for i, value in enumerate(values):
        if not _GUID.match(value):
            raise InvalidRequest(f"subscriptions[{i}]", value, "subscription ids are GUIDs")
    return [v.lower() for v in values]


SubscriptionIds = Annotated[list[str], AfterValidator(_subscription_ids)]
KeyVaultKeyId = Annotated[str, AfterValidator(lambda value: parse_key(value) and value)]


class FleetScope(BaseModel):
    """The credentials and the subscriptions a fleet-wide flow looks in."""

    azure_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK Azure Credentials' block to use."
    )
    subscriptions: SubscriptionIds = Field(
        default_factory=list,
        description="Subscription ids; empty: every subscription the credentials can see.",
    )


class InventoryRequest(FleetScope):
    """Which subscriptions to look at, the limits to judge by, where the files go."""

    max_key_age_days: int = Field(90, ge=1, description="A key version older than this fails.")
    min_days_before_expiry: int = Field(
        30, ge=0, description="A key expiring sooner than this fails."
    )
    report_dir: str | None = Field(
        None,
        description="Directory for the CSV, JSON and OSCAL files and the run history (each "
        "run's rows, so the next run reports what changed). None: artifacts only.",
    )
    use_resource_graph: bool = Field(
        True,
        description="Discover with Azure Resource Graph (one query for the whole fleet); "
        "off: list each resource type per subscription through ARM.",
    )


def check_report_dir(report_dir: str | None) -> Path | None:
    """The report directory, which must exist and be writable."""
    if report_dir is None:
        return None
    path = Path(report_dir).expanduser()
    if not path.is_dir():
        raise InvalidRequest("report_dir", report_dir, "must be an existing directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidRequest("report_dir", report_dir, "must be writable")
    return path


class InventoryResult(BaseModel):
    """What one inventory run found."""

    resources: int
    rows: int
    non_compliant: int
    no_access: int
    files: list[str] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)


class BlastRadiusRequest(FleetScope):
    """The key whose dependents to list, and where to look."""

    key_id: KeyVaultKeyId = Field(
        ...,
        description="Key Vault key id; without a version, every version's dependents.",
    )


class BlastRadiusResult(BaseModel):
    """What the key protects."""

    key_id: str
    dependents: list[Dependent]
