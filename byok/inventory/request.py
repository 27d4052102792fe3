"""The inventory flow's request and result (Prefect-free, checked before any call)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, model_validator

from byok.errors import InvalidRequest
from byok.inventory.blast import Dependent, parse_any_key, parse_key
from byok.inventory.ibm import key_protect_id
from byok.inventory.report import Change
from byok.outcomes import PLAN_ONLY
from byok.parameters import AZURE_BLOCK_NAME

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _guids(field: str, rule: str) -> AfterValidator:
    """A list of GUIDs (lower-cased), or InvalidRequest naming the first one that is not."""

    def check(values: list[str]) -> list[str]:
        for i, value in enumerate(values):
            if not _GUID.match(value):
                raise InvalidRequest(f"{field}[{i}]", value, rule)
        return [v.lower() for v in values]

    return AfterValidator(check)


SubscriptionIds = Annotated[list[str], _guids("subscriptions", "subscription ids are GUIDs")]
KeyVaultKeyId = Annotated[str, AfterValidator(lambda value: parse_key(value) and value)]
AnyKeyId = Annotated[str, AfterValidator(lambda value: parse_any_key(value) and value)]


class IbmAccountScope(BaseModel):
    """An IBM Cloud account to inventory: its credentials and the Key Protect instances to
    read (IBM's resource controller, which lists them, is not used)."""

    ibm_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK IBM Cloud Credentials' block to use."
    )
    key_protect_instances: Annotated[
        list[str], _guids("key_protect_instances", "instance ids are GUIDs")
    ] = Field(default_factory=list, description="GUIDs of the Key Protect instances to read.")
    cos_instance_id: str | None = Field(
        None, description="COS instance GUID (needed to list buckets with IAM, not HMAC)."
    )
    buckets: list[str] = Field(
        default_factory=list,
        description="Buckets to look for encrypted images in; empty: every listed bucket.",
    )


class FleetScope(BaseModel):
    """The credentials and the subscriptions a fleet-wide flow looks in."""

    azure_credentials_block: str | None = Field(None, description=AZURE_BLOCK_NAME)
    subscriptions: SubscriptionIds = Field(
        default_factory=list,
        description="Subscription ids; empty: every subscription the credentials can see.",
    )


class CloudScope(BaseModel):
    """The Azure subscriptions and IBM Cloud accounts an inventory looks in."""

    azure_credentials_block: str | None = Field(
        None,
        description="Name of the saved 'BYOK Azure Credentials' block to use; None: no Azure.",
    )
    subscriptions: SubscriptionIds = Field(
        default_factory=list,
        description="Subscription ids; empty: every subscription the credentials can see.",
    )
    ibm_accounts: list[IbmAccountScope] = Field(
        default_factory=list, description="IBM Cloud accounts; empty: no IBM rows."
    )
    read_kubernetes: bool = Field(
        True,
        description="Read each AKS cluster's StorageClasses through its Kubernetes API (with "
        "its user credentials); off: no StorageClass rows.",
    )

    @model_validator(mode="after")
    def _some_cloud(self) -> CloudScope:
        if self.azure_credentials_block is None and not self.ibm_accounts:
            raise InvalidRequest(
                "azure_credentials_block", None, "give it, or ibm_accounts, or both"
            )
        return self


class ReportBucket(BaseModel):
    """A COS (S3-compatible) bucket for the report files, reached with an IBM block."""

    ibm_credentials_block: str = Field(
        ..., description="Name of the saved 'BYOK IBM Cloud Credentials' block whose COS to use."
    )
    bucket: str = Field(..., description="Existing bucket the credentials may write to.")
    prefix: str = Field("byok-inventory/", description="Key prefix of the report objects.")
    cos_instance_id: str | None = Field(
        None, description="COS instance GUID (with IAM rather than HMAC credentials)."
    )


class InventoryRequest(CloudScope):
    """Which subscriptions and accounts to look at, the limits to judge by, where the files
    go."""

    max_key_age_days: int = Field(90, ge=1, description="A key version older than this fails.")
    min_days_before_expiry: int = Field(
        30, ge=0, description="A key expiring sooner than this fails."
    )
    report_dir: str | None = Field(
        None,
        description="Directory for the CSV, JSON and OSCAL files and the run history (each "
        "run's rows, so the next run reports what changed). None: artifacts only.",
    )
    report_bucket: ReportBucket | None = Field(
        None, description="Or: the bucket for those files (and the history)."
    )
    use_resource_graph: bool = Field(
        True,
        description="Discover with Azure Resource Graph (one query for the whole fleet); "
        "off: list each resource type per subscription through ARM.",
    )
    plan_only: bool = PLAN_ONLY

    @model_validator(mode="after")
    def _one_destination(self) -> InventoryRequest:
        if self.report_dir is not None and self.report_bucket is not None:
            raise InvalidRequest(
                "report_bucket", self.report_bucket.bucket, "give it or report_dir, not both"
            )
        return self


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


class BlastRadiusRequest(CloudScope):
    """The key whose dependents to list, and where to look."""

    key_id: AnyKeyId = Field(
        ...,
        description="Key Vault key id (without a version: every version's dependents), or "
        "Key Protect root key id or CRN (looked up in ibm_accounts).",
    )
    plan_only: bool = PLAN_ONLY

    @model_validator(mode="after")
    def _where_to_look(self) -> BlastRadiusRequest:
        if key_protect_id(self.key_id) is not None:
            if not self.ibm_accounts:
                raise InvalidRequest(
                    "ibm_accounts", [], "a Key Protect key's dependents are looked up there"
                )
        elif self.azure_credentials_block is None:
            raise InvalidRequest(
                "azure_credentials_block", None, "a Key Vault key's dependents are in Azure"
            )
        return self


class BlastRadiusResult(BaseModel):
    """What the key protects."""

    key_id: str
    dependents: list[Dependent]
