"""Beyond a process worker (issue 19, item 6): the flows' image, the container work pools'
job templates (checked against Prefect's and the workers' schemas), the container deployments
and results shared between workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes.client
import pytest
import yaml
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate as ClientWorkPoolCreate
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.filesystems import LocalFileSystem
from prefect.server.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL
from prefect.utilities.templating import apply_values
from prefect.workers.process import ProcessWorker

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = ROOT / "deployments"
IMAGE = "byok-flows:test"
# The job configuration fields of the workers, i.e. the keys their base job template's
# job_configuration must have: KubernetesWorkerJobConfiguration and DockerWorkerJobConfiguration
# (prefect-kubernetes 0.8.0, prefect-docker 0.7.4),
# https://github.com/PrefectHQ/prefect/blob/main/src/integrations/prefect-kubernetes/prefect_kubernetes/worker.py
# https://github.com/PrefectHQ/prefect/blob/main/src/integrations/prefect-docker/prefect_docker/worker.py
KUBERNETES_FIELDS = {
    "command", "env", "labels", "name", "annotations", "namespace", "job_manifest",
    "cluster_config", "job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output",
}  # fmt: skip
DOCKER_FIELDS = {
    "command", "env", "labels", "name", "image", "registry_credentials", "image_pull_policy",
    "networks", "network_mode", "auto_remove", "volumes", "stream_output", "mem_limit",
    "memswap_limit", "privileged", "container_create_kwargs",
}  # fmt: skip
RESULTS_ENV = {
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "local-file-system/byok-results",
}


def rendered(template: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The job configuration a worker gets: the variables' defaults and `values` applied."""
    properties = template["variables"]["properties"]
    defaults = {name: spec.get("default") for name, spec in properties.items()}
    given = {**defaults, **values}
    jsonschema.validate({k: v for k, v in given.items() if v is not None}, template["variables"])
    return apply_values(template["job_configuration"], given)


def unknown_fields(data: Any, kind: str, at: str = "") -> list[str]:
    """The keys of `data` that the Kubernetes model `kind` (e.g. V1Job) does not have, nested
    models included (the API server rejects them under strict field validation)."""
    if data is None:  # not set (the worker fills the command and env in)
        return []
    if kind.startswith("list["):
        return [field for item in data for field in unknown_fields(item, kind[5:-1], at)]
    model = getattr(kubernetes.client.models, kind, None)
    if model is None:  # str, int, dict(str, str), object
        return []
    attributes = {key: name for name, key in model.attribute_map.items()}
    found = []
    for key, value in data.items():
        if key not in attributes:
            found.append(f"{at}{key}")
        else:
            found += unknown_fields(value, model.openapi_types[attributes[key]], f"{at}{key}.")
    return found


def test_the_kubernetes_job_template_is_valid_and_runs_as_non_root_with_shared_results() -> None:
    template = json.loads((DEPLOYMENTS / "k8s-job-template.json").read_text())
    WorkPoolCreate(name="byok-kubernetes", type="kubernetes", base_job_template=template)
    jsonschema.validators.validator_for(template["variables"]).check_schema(template["variables"])
    assert set(template["job_configuration"]) == KUBERNETES_FIELDS

    job = rendered(template, image=IMAGE, env={"EXTRA": "1"})["job_manifest"]
    assert unknown_fields(job, "V1Job") == []
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env.items() >= RESULTS_ENV.items()
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"][:1]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims == {"results": "byok-results"}
    assert mounts["results"] == "/var/lib/byok/results"


def test_the_docker_job_template_is_valid_and_shares_results() -> None:
    template = json.loads((DEPLOYMENTS / "docker-job-template.json").read_text())
    WorkPoolCreate(name="byok-docker", type="docker", base_job_template=template)
    jsonschema.validators.validator_for(template["variables"]).check_schema(template["variables"])
    assert set(template["job_configuration"]) == DOCKER_FIELDS

    job = rendered(template)
    assert job["image"] == "byok-flows:latest"
    assert job["env"] == RESULTS_ENV
    assert job["volumes"] == ["byok-results:/var/lib/byok/results"]


def test_a_template_placeholder_without_its_variable_is_refused() -> None:
    template = json.loads((DEPLOYMENTS / "k8s-job-template.json").read_text())
    del template["variables"]["properties"]["results_claim"]
    with pytest.raises(ValueError, match="results_claim"):
        WorkPoolCreate(name="byok-kubernetes", type="kubernetes", base_job_template=template)


def test_the_container_deployments_are_the_process_ones_on_the_image() -> None:
    process = yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())
    container = yaml.safe_load((DEPLOYMENTS / "prefect-container.yaml").read_text())
    (build_image,) = container["build"]
    image_step = build_image["prefect_docker.deployments.steps.build_docker_image"]
    assert image_step["dockerfile"] == "Dockerfile"
    (pull,) = container["pull"]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert f"BYOK_FLOWS_DIR={directory}" in (ROOT / "Dockerfile").read_text()

    def comparable(deployment: dict[str, Any]) -> dict[str, Any]:
        steps = [s for s in deployment.pop("build", []) if s != build_image]
        return {**deployment, "build": steps, "work_pool": None}

    assert [comparable(d) for d in container["deployments"]] == [
        comparable(d) for d in process["deployments"]
    ], "every deployment of prefect.yaml, the same in prefect-container.yaml"
    for deployment in container["deployments"]:
        assert deployment["work_pool"]["job_variables"] == {"image": "{{ build-image.image }}"}
        assert build_image in deployment.get("build", container["build"])


def container_builder() -> list[str] | None:
    """The build command of a working container builder on this machine, if any."""
    for tool, probe in (("docker", "info"), ("podman", "info"), ("buildah", "version")):
        if shutil.which(tool):
            probed = subprocess.run([tool, probe], capture_output=True, timeout=60, check=False)
            if probed.returncode == 0:
                return [tool, "build"] if tool != "buildah" else [tool, "bud"]
    return None


@pytest.mark.slow
def test_the_image_builds_with_the_accelerator_and_qemu_img_as_non_root() -> None:
    builder = container_builder()
    if builder is None:
        pytest.skip("no working container builder (docker/podman daemon, buildah) here")
    subprocess.run([*builder, "-t", IMAGE, str(ROOT)], check=True, timeout=1800)
    check = (
        "import os, subprocess; from byok.vhd.xts import BACKENDS; assert BACKENDS[0] == 'c';"
        "subprocess.run(['qemu-img', '--version'], check=True); assert os.getuid() != 0;"
        "import flows.disk_encryption_set, flows.ibm_vpc_image"
    )
    runner = "podman" if builder[0] in ("podman", "buildah") else "docker"
    subprocess.run([runner, "run", "--rm", IMAGE, "python", "-c", check], check=True, timeout=300)


# -- results shared by two process workers ----------------------------------------------------


@pytest.fixture
def two_workers(prefect_harness: None, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """Two process work pools, each served by its own worker (own home, own local storage),
    both pools' job variables pointing flow runs at one shared LocalFileSystem block."""
    suffix = uuid.uuid4().hex[:8]
    shared = tmp_path / "results"
    block = f"byok-results-{suffix}"
    LocalFileSystem(basepath=str(shared)).save(block)
    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["env"]["default"] = {
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"local-file-system/{block}",
    }
    pools = (f"byok-ops-a-{suffix}", f"byok-ops-b-{suffix}")
    workers = []
    for pool in pools:
        with get_client(sync_client=True) as client:
            client.create_work_pool(
                ClientWorkPoolCreate(name=pool, type="process", base_job_template=template)
            )
        home = tmp_path / pool
        home.mkdir()
        env = {
            **os.environ,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_HOME": str(home),
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
                cwd=home,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(home / "worker.log").open("w"),
            )
        )
    try:
        yield pools[0], pools[1], shared
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=60)


@pytest.mark.slow
def test_a_result_persisted_on_one_worker_is_read_by_a_run_on_another(
    two_workers: tuple[str, str, Path],
) -> None:
    from tests.operating_flows import consume, produce

    pool_a, pool_b, shared = two_workers
    for flow, pool in ((produce, pool_a), (consume, pool_b)):
        remote = flow.from_source(str(ROOT), f"tests/operating_flows.py:{flow.name}")
        assert isinstance(remote, Flow)
        remote.deploy(f"{flow.name}-{pool}", work_pool_name=pool, print_next_steps=False)
    produced = run_deployment(
        f"produce/produce-{pool_a}", parameters={"value": "dek-7"}, timeout=600
    )
    assert isinstance(produced, FlowRun)
    consumed = run_deployment(
        f"consume/consume-{pool_b}", parameters={"producer_run_id": str(produced.id)}, timeout=600
    )
    assert isinstance(consumed, FlowRun)
    assert produced.state is not None and consumed.state is not None
    assert consumed.state.is_completed(), consumed.state
    result = consumed.state.result()
    assert result["read"]["value"] == "dek-7"
    assert result["read"]["home"].endswith(pool_a) and result["home"].endswith(pool_b)
    assert (produced.work_pool_name, consumed.work_pool_name) == (pool_a, pool_b)
    assert len([p for p in shared.iterdir() if p.is_file()]) == 2  # both runs' results
