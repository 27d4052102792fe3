"""The release pipeline's request and result (no Prefect import), the child requests it
derives, and the idempotency keys of children started as deployments."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from byok.aks_models import AksClusterRequest, ClusterInfo, NodePoolRequest
from byok.disk_encryption_set_models import (
    DiskEncryptionSetRequest,
    DiskEncryptionSetResult,
    des_id,
)
from byok.gallery import (
    DataDiskEncryption,
    ImageSource,
    ImageVersionRequest,
    ImageVersionResult,
    RegionEncryption,
    TargetRegion,
)
from byok.outcomes import Plan, StepOutcome
from byok.parameters import AZURE_BLOCK_NAME
from byok.validation import GalleryImageName, GalleryName, ImageVersionName


class ReleasePipelineRequest(BaseModel):
    """Where and what to release."""

    azure_credentials_block: str | None = Field(None, description=AZURE_BLOCK_NAME)
    resource_group: str = Field(..., description="Resource group of everything released.")
    regions: list[str] = Field(
        ..., min_length=1, description="Regions; the first is home (gallery, cluster)."
    )
    name_prefix: str = Field(
        "rel",
        pattern=r"^[a-z][a-z0-9]{0,7}$",
        description="Prefix of the vaults, keys and sets made per region.",
    )
    gallery_name: GalleryName = Field(..., description="Gallery (created if missing).")
    image_name: GalleryImageName = Field(..., description="Image definition (created if missing).")
    version: ImageVersionName = Field(..., description="Image version (major.minor.patch).")
    source_image_id: str = Field(..., description="Managed image to publish.")
    data_disk_luns: list[int] = Field(
        default_factory=list,
        description="Data-disk LUNs of the source, each encrypted with the region's set.",
    )
    cluster_name: str = Field(
        ...,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$",
        description="AKS cluster (created on the home set).",
    )
    pool_name: str = Field(
        "release", pattern=r"^[a-z][a-z0-9]{0,11}$", description="Node pool added for the release."
    )
    chain_by: Literal["subflows", "deployments"] = Field(
        "subflows",
        description="Run the children in this process, or as deployments "
        "(run_deployment with idempotency keys; needs a worker).",
    )
    poll_seconds: float = Field(30, gt=0, description="Seconds between checks.")
    plan_only: bool = Field(
        False,
        description="Plan only: validate, then each child flow's plan (run with plan_only) as "
        "the `release-pipeline-plan` artifact and the run's result, its rows named after the "
        "child; a child whose inputs do not exist yet (the sets) is listed as `would run`. "
        "Nothing is written.",
    )

    @property
    def home(self) -> str:
        """The home region (gallery, cluster)."""
        return self.regions[0]

    def _common(self) -> dict[str, str | None]:
        return {
            "azure_credentials_block": self.azure_credentials_block,
            "resource_group": self.resource_group,
        }

    def set_request(self, region: str) -> DiskEncryptionSetRequest:
        """The disk encryption set (with its vault and key) of a region."""
        short = region.replace(" ", "").lower()[:10]
        return DiskEncryptionSetRequest(
            **self._common(),
            location=region,
            vault_name=f"{self.name_prefix}-kv-{short}",
            key_name=f"{self.name_prefix}-key",
            des_name=f"{self.name_prefix}-des-{short}",
        )

    def set_ids(self, subscription: str) -> dict[str, str]:
        """Region → the id its set has (or will have)."""
        return {
            r: des_id(subscription, self.resource_group, self.set_request(r).des_name)
            for r in self.regions
        }

    def cluster_request(self, home_set: str) -> AksClusterRequest:
        """The cluster on the home region's set."""
        return AksClusterRequest(
            **self._common(),
            location=self.home,
            cluster_name=self.cluster_name,
            disk_encryption_set_id=home_set,
        )

    def pool_request(self, home_set: str) -> NodePoolRequest:
        """The release's node pool on the home region's set."""
        return NodePoolRequest(
            **self._common(),
            cluster_name=self.cluster_name,
            pool_name=self.pool_name,
            disk_encryption_set_id=home_set,
        )

    def image_request(self, sets: dict[str, str]) -> ImageVersionRequest:
        """The image version, encrypted in each region with its set (region → set id), every
        data disk too."""
        return ImageVersionRequest(
            **self._common(),
            location=self.home,
            gallery_name=self.gallery_name,
            image_name=self.image_name,
            version=self.version,
            source=ImageSource(managed_image_id=self.source_image_id),
            target_regions=[
                TargetRegion(
                    name=region,
                    encryption=RegionEncryption(
                        os_disk_encryption_set=sets[region],
                        data_disks=[
                            DataDiskEncryption(lun=lun, disk_encryption_set=sets[region])
                            for lun in self.data_disk_luns
                        ],
                    ),
                )
                for region in self.regions
            ],
            poll_seconds=self.poll_seconds,
        )


class ReleasePipelineResult(BaseModel):
    """What the pipeline released (the cluster as the AKS flows report it)."""

    disk_encryption_sets: dict[str, DiskEncryptionSetResult]
    image_version: ImageVersionResult
    cluster: ClusterInfo


def sets_planned_to_exist(plans: list[Plan]) -> bool:
    """Whether the set children's plans find every set made already (the children after
    them can then be planned: they check the sets)."""
    return not any(
        s.step == "Create disk encryption set" and s.verb == "create"
        for p in plans
        for s in p.steps
    )


def plan_later(flow: str, resource: str) -> StepOutcome:
    """The plan row of a child that cannot be planned before the sets exist."""
    return StepOutcome(
        step=flow,
        resource=resource,
        verb="run",
        planned=True,
        note="after the sets are made; plan again then for its steps",
    )


def in_pipeline(plan: Plan) -> list[StepOutcome]:
    """A child's plan rows, each step named after the child flow."""
    return [s.model_copy(update={"step": f"{plan.flow}: {s.step}"}) for s in plan.steps]


def idempotency_key(deployment: str, parameters: dict[str, Any]) -> str:
    """The same child request always gets the same key."""
    digest = hashlib.sha256(json.dumps([deployment, parameters], sort_keys=True).encode())
    return f"byok-{digest.hexdigest()[:32]}"
