"""The release pipeline's summary row of a child run: `ran` when this pipeline run started it,
`adopted` when an earlier pipeline run did (what `run_deployment` with the child's
idempotency key returns on a re-run chained by deployments), shown with stand-in flows."""

from __future__ import annotations

from uuid import UUID

from prefect import flow

from byok.aks_models import ClusterInfo
from tasks.outcomes import summarize
from tasks.release_pipeline import add_child_run
from tests.helpers import run_tables

POOL = ClusterInfo(
    id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c",
    name="c",
    location="westeurope",
    kubernetes_version="1.30",
    disk_encryption_set_id=None,
    node_pools=["system", "release"],
)


@flow(name="child-of-one")
def child_flow() -> None:
    """A child that did its work."""


@flow(name="pipeline-of-one")
def pipeline_of_one(earlier: UUID | None) -> UUID:
    """Runs its child, or finds the run an earlier run started (as `run_deployment` does with
    an idempotency key), and keeps it in its summary."""
    run_id = earlier or child_flow(return_state=True).state_details.flow_run_id
    add_child_run("add-encrypted-node-pool", POOL, run_id)
    summarize("pipeline-of-one")
    return run_id


def test_a_child_run_an_earlier_pipeline_run_started_is_adopted(prefect_harness: None) -> None:
    first = pipeline_of_one(None, return_state=True)
    again = pipeline_of_one(first.result(), return_state=True)
    (ran,), (adopted,) = (
        run_tables(s.state_details.flow_run_id)["pipeline-of-one-summary"] for s in (first, again)
    )
    assert ran["resource"] == adopted["resource"] == POOL.id
    assert ran["outcome"].startswith("ran (flow run ")
    assert adopted["outcome"].startswith("adopted (flow run ")
    assert adopted["outcome"].endswith(
        " of an earlier pipeline run; its steps: the add-encrypted-node-pool-summary artifact)"
    )
