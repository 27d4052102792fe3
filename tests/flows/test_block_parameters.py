"""Credentials as block-typed flow parameters: Prefect's UI offers the saved blocks, a run
stores only the block's reference (never its secret), a request naming its block still
works, and a run with neither, or with a block's fields by value, is refused before any
write."""

from __future__ import annotations

import importlib
import json
import pkgutil
from typing import Any, get_type_hints

import pytest
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.utilities.callables import parameter_schema

import flows
from blocks.azure import AzureCredentials
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from flows.registration import FeatureRegistrationRequest, ensure_feature_registration

SLUGS = {
    "azure_credentials_block": "byok-azure-credentials",
    "ibm_credentials_block": "byok-ibm-cloud-credentials",
}
# Flows taking more than one block: request field → block-typed parameter.
PARAMETERS = {
    "provider_credentials_block": ("provider_credentials", "byok-azure-credentials"),
    "customer_credentials_block": ("customer_credentials", "byok-azure-credentials"),
}


def _flows() -> list[Flow[Any, Any]]:
    found: dict[str, Flow[Any, Any]] = {}
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        found.update({f.name: f for f in vars(module).values() if isinstance(f, Flow)})
    return list(found.values())


@pytest.mark.parametrize("flow", _flows(), ids=lambda f: f.name)
def test_every_flow_takes_its_credentials_as_a_block_typed_parameter(
    flow: Flow[Any, Any],
) -> None:
    fields = getattr(get_type_hints(flow.fn).get("request"), "model_fields", {})
    wanted = {parameter: slug for f, (parameter, slug) in PARAMETERS.items() if f in fields}
    wanted |= dict.fromkeys(["credentials"], next((SLUGS[f] for f in SLUGS if f in fields), None))
    wanted = {parameter: slug for parameter, slug in wanted.items() if slug}
    if not wanted:
        pytest.skip(f"{flow.name} takes no credentials block")
    schema = parameter_schema(flow).model_dump()
    for parameter, slug in wanted.items():
        options = schema["properties"][parameter]["anyOf"]
        ref = next(o["$ref"] for o in options if "$ref" in o).rsplit("/", 1)[-1]
        assert schema["definitions"][ref]["block_type_slug"] == slug
        assert {"type": "null"} in options  # optional: a request naming its block still works


def _request(**values: Any) -> FeatureRegistrationRequest:
    return FeatureRegistrationRequest(feature="SIGEncryption", poll_seconds=0.01, **values)


def test_a_run_given_a_block_reference_uses_it_and_stores_only_the_reference(
    azure_block: str, emulator: Emulator, flow_principal: Principal
) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", polls=1)
    reference = {
        "$ref": {"block_document_id": str(AzureCredentials.load(azure_block)._block_document_id)}
    }
    state = ensure_feature_registration(_request(), reference, return_state=True)  # type: ignore[arg-type]
    assert state.is_completed(), state.message
    assert emulator.arm.feature("Microsoft.Compute", "SIGEncryption").state == "Registered"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
    assert run.parameters["credentials"] == reference
    assert flow_principal.secret not in json.dumps(run.parameters)


def test_neither_a_block_nor_a_name_is_refused_before_any_write(
    azure_block: str, emulator: Emulator
) -> None:
    state = ensure_feature_registration(_request(), return_state=True)
    assert state.is_failed()
    assert state.message == (
        "request.azure_credentials_block = None: pick a saved 'BYOK Azure Credentials' block "
        "in `credentials`, or name one here"
    )
    assert not emulator.requests.find("POST", "") and not emulator.requests.find("PUT", "")


def test_a_block_given_by_value_is_refused_without_echoing_it(
    azure_block: str, emulator: Emulator, flow_principal: Principal
) -> None:
    fields = AzureCredentials.load(azure_block).model_dump(
        mode="json", context={"include_secrets": True}
    )
    state = ensure_feature_registration(_request(), fields, return_state=True)  # type: ignore[arg-type]
    assert state.is_failed()
    assert state.message is not None and state.message.startswith(
        'credentials = "<a block\'s fields>": pick a saved'
    )
    assert flow_principal.secret not in state.message
    assert not emulator.requests.find("POST", "") and not emulator.requests.find("PUT", "")
