"""Flows compose tasks and nothing else: no flow module defines a task or a pydantic model,
nor reaches an SDK or the clients (tasks do). Task modules run each other's tasks but borrow
no helper, constant or model from another step group (shared logic lives in clients/ or
byok/). The import-linter contracts in pyproject.toml check the layers between packages;
this checks what the flow and task modules themselves hold and import."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest
from prefect import Task
from pydantic import BaseModel

FLOWS = sorted(p.stem for p in (Path(__file__).parents[1] / "flows").glob("*.py"))
SDKS = ("azure", "ibm_boto3", "ibm_botocore", "ibm_cloud_sdk_core", "ibm_platform_services",
        "ibm_vpc", "SoftLayer", "kubernetes", "clients")  # fmt: skip


def defined_steps_and_models(module: ModuleType) -> list[str]:
    """The tasks and pydantic models `module` defines (imported ones, and generic models
    it parametrizes, aside)."""
    return [
        attr
        for attr, value in vars(module).items()
        if getattr(value, "__module__", None) == module.__name__
        and (isinstance(value, Task) or _model(value))
    ]


def _model(value: object) -> bool:
    if not (inspect.isclass(value) and issubclass(value, BaseModel)):
        return False
    return value.__pydantic_generic_metadata__["origin"] is None


@pytest.mark.parametrize("name", FLOWS)
def test_flow_modules_define_no_task_nor_model(name: str) -> None:
    defined = defined_steps_and_models(importlib.import_module(f"flows.{name}"))
    assert defined == [], f"flows/{name}.py defines {defined}: move them to tasks/ or byok/"


def test_the_check_finds_a_task_and_a_model() -> None:
    module = ModuleType("flows.example")
    exec(  # a flow module as it was before: a request model and a task of its own
        "from prefect import task\nfrom pydantic import BaseModel\n"
        "class Request(BaseModel):\n    name: str\n"
        "@task\ndef step() -> None: ...\n",
        vars(module),
    )
    assert defined_steps_and_models(module) == ["Request", "step"]


@pytest.mark.parametrize("name", FLOWS)
def test_flow_modules_import_no_sdk_nor_clients(name: str) -> None:
    tree = ast.parse((Path(__file__).parents[1] / "flows" / f"{name}.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    reached = sorted(m for m in imported if m.split(".")[0] in SDKS)
    assert reached == [], f"flows/{name}.py imports {reached}: SDK calls belong in tasks/"


TASKS = sorted(p.stem for p in (Path(__file__).parents[1] / "tasks").glob("*.py"))
# Modules that hold what every step group uses by design, not steps of their own.
SHARED = {
    "tasks.retry": "which failures a step retries, and the retry options of every step",
    "tasks.in_memory": "the options of a step whose result stays in memory",
    "tasks.refusal": "how a flow's refused request ends its run",
    "tasks.artifacts": "artifact keys Prefect accepts",
    "tasks.events": "the events every procedure emits",
    "tasks.outcomes": "what every step reports it did, and a run's summary or plan",
    "tasks.run_lock": "one run per resource, held by any step group",
    "tasks.task_runners": "where a fleet run's steps execute",
}


def borrowed_helpers(source: str) -> list[str]:
    """`module.name` for each name a tasks module imports from another step group that is
    not a Task (importing a task to run it as a nested step is fine), and `module` for a
    step group imported whole (its helpers would be reached through it)."""
    tree = ast.parse(source)
    whole = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("tasks.") and alias.name not in SHARED
    ]
    return whole + [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("tasks.")
        and node.module not in SHARED
        for alias in node.names
        if not isinstance(getattr(importlib.import_module(node.module), alias.name), Task)
    ]


@pytest.mark.parametrize("name", TASKS)
def test_task_modules_borrow_no_helpers_from_each_other(name: str) -> None:
    source = (Path(__file__).parents[1] / "tasks" / f"{name}.py").read_text()
    borrowed = borrowed_helpers(source)
    assert borrowed == [], (
        f"tasks/{name}.py imports {borrowed} from other task modules: shared logic goes down "
        "into clients/ (SDK helpers) or byok/ (pure)"
    )


def test_the_check_finds_a_borrowed_helper() -> None:
    source = (
        "import tasks.retry\n"
        "import tasks.ibm_cos\n"
        "from tasks.retry import STEP_RETRIES\n"
        "from tasks.ibm_cos import ensure_bucket\n"
        "from tasks.inventory import readable_subscriptions, AzureClients\n"
    )
    assert borrowed_helpers(source) == ["tasks.ibm_cos", "tasks.inventory.AzureClients"]
