"""The Prefect UI renders field descriptions as markdown, where a bare `<name>` is an HTML
tag and disappears ("Default: '.vhd'"): every placeholder in a flow parameter or block field
description must sit in backticks."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema

from blocks.azure import AzureCredentials
from blocks.ibm import IBMCloudCredentials

ROOT = Path(__file__).resolve().parents[1]
BARE_PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>]*>")


def descriptions(schema: Any) -> Iterator[str]:
    """Every `description` in a JSON schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from descriptions(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from descriptions(value)


def bare_placeholders(text: str) -> list[str]:
    """Placeholders outside `code` spans."""
    return BARE_PLACEHOLDER.findall(re.sub(r"`[^`]*`", "", text))


def entrypoints() -> list[str]:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    return sorted({d["entrypoint"] for d in spec["deployments"]})


def test_the_check_sees_a_bare_placeholder() -> None:
    assert bare_placeholders("Default: '<image_name>.vhd'.") == ["<image_name>"]
    assert bare_placeholders("Default: `<image_name>.vhd`.") == []


@pytest.mark.parametrize("entrypoint", entrypoints())
def test_flow_parameter_descriptions_keep_their_placeholders(entrypoint: str) -> None:
    module, _, name = entrypoint.partition(":")
    flow = getattr(importlib.import_module(module), name)
    schema = parameter_schema(flow.fn).model_dump()
    found = [(text, bare_placeholders(text)) for text in descriptions(schema)]
    assert [f for f in found if f[1]] == []


@pytest.mark.parametrize("block", [AzureCredentials, IBMCloudCredentials])
def test_block_field_descriptions_keep_their_placeholders(block: Any) -> None:
    found = [(t, bare_placeholders(t)) for t in descriptions(block.model_json_schema())]
    assert [f for f in found if f[1]] == []
