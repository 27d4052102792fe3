"""Flows compose tasks and nothing else: no flow module defines a task or a pydantic model,
nor reaches an SDK or the clients (tasks do). The import-linter contracts in pyproject.toml
check the layers between packages; this checks what the flow modules themselves hold."""

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
