"""Release pipeline steps: the checks made before its first child writes, and, in a plan, the
children's plans kept as the pipeline's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id
from prefect import task

from blocks.azure import AzureCredentials
from byok.outcomes import StepOutcome
from byok.release_models import ReleasePipelineRequest
from byok.validation import InvalidRequest, check_name
from clients.azure import AzureClients
from tasks.outcomes import kept
from tasks.retry import STEP_RETRIES


@task(name="Validate pipeline request", **STEP_RETRIES)
def validate_pipeline_request(
    credentials: AzureCredentials, request: ReleasePipelineRequest
) -> None:
    """Before the first child writes: the resource group's name, the source image exists and
    its data-disk LUNs are the ones to encrypt."""
    check_name("resource_group", "resource_group", request.resource_group)
    image = request.source_image_id
    p: Mapping[str, Any] = parse_resource_id(image) if is_valid_resource_id(image) else {}
    if f"{p.get('namespace')}/{p.get('type')}".lower() != "microsoft.compute/images":
        raise InvalidRequest("source_image_id", image, "not a managed image id")
    try:
        found = (
            AzureClients.of(credentials, p["subscription"])
            .compute()
            .images.get(p["resource_group"], p["name"])
        )
    except ResourceNotFoundError:
        raise InvalidRequest("source_image_id", image, "no such managed image") from None
    luns = sorted(int(d.lun) for d in found.properties.storage_profile.data_disks or [])
    if sorted(request.data_disk_luns) != luns:
        raise InvalidRequest(
            "data_disk_luns", request.data_disk_luns, f"the source image has data disks {luns}"
        )


@task(name="Add to the pipeline's plan")
def add_to_plan(rows: list[StepOutcome]) -> None:
    """Keep a child's plan rows (or the row of a child planned later) in the pipeline's."""
    for row in rows:
        kept(row)
