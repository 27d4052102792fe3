"""Release pipeline steps: the checks made before its first child writes, each child's run
kept in the pipeline's summary, and, in a plan, the children's plans kept as the pipeline's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id
from prefect import get_client, task
from prefect.runtime import flow_run

from blocks.azure import AzureCredentials
from byok.aks_models import ClusterInfo
from byok.disk_encryption_set_models import DiskEncryptionSetResult
from byok.gallery import ImageVersionResult
from byok.outcomes import StepOutcome
from byok.release_models import ReleasePipelineRequest
from byok.validation import InvalidRequest, check_name
from clients.azure import AzureClients
from tasks.outcomes import kept, report
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


@task(name="Add the child's run to the summary")
def add_child_run(
    child: str, result: DiskEncryptionSetResult | ImageVersionResult | ClusterInfo, run_id: UUID
) -> None:
    """Keep the row of child flow `child`'s run (what it did: its own `<child>-summary`): run
    by this pipeline run, or adopted (chained by deployments, a re-run finds the run an
    earlier pipeline run started)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        parent = client.read_task_run(run.parent_task_run_id) if run.parent_task_run_id else None
    ours = parent is not None and str(parent.flow_run_id) == str(flow_run.id)
    made = result.disk_encryption_set if isinstance(result, DiskEncryptionSetResult) else result
    note = f"flow run {run.name}" + ("" if ours else " of an earlier pipeline run")
    report(
        made.id,
        "run" if ours else "adopt",
        step=child,
        note=f"{note}; its steps: the {child}-summary artifact",
    )


@task(name="Add to the pipeline's plan")
def add_to_plan(rows: list[StepOutcome]) -> None:
    """Keep a child's plan rows (or the row of a child planned later) in the pipeline's."""
    for row in rows:
        kept(row)
