"""A principal without the roles the README lists for a flow gets the flow's one-line refusal
(no traceback) and nothing is left half-created."""

from __future__ import annotations

from emulator.server import Emulator
from flows.acr import create_encrypted_registry
from flows.disk_encryption_set import prepare_disk_encryption_set
from tests.conftest import emulator_credentials
from tests.flows.refusals import refused
from tests.flows.test_acr import request as registry_request
from tests.flows.test_disk_encryption_set import request


def test_a_missing_role_is_refused_in_one_line_before_any_resource(
    prefect_harness: None, emulator: Emulator
) -> None:
    """Contributor without the role-assignment role: the set would be made, then left
    without its grant."""
    state = emulator.state
    principal = state.add_service_principal(name="byok-contributor-only")
    sub = f"/subscriptions/{emulator.identity.subscription_id}"
    state.grant_role(principal.object_id, "Contributor", sub)
    emulator_credentials(
        emulator, client_id=principal.client_id, client_secret=principal.secret
    ).save("contributor-only", overwrite=True)
    before = {k for k in emulator.arm.resources if "roleassignments" not in k}
    message = refused(
        prepare_disk_encryption_set, request("contributor-only").model_dump(mode="json")
    )
    missing = "Microsoft.Authorization/roleAssignments/write"
    assert "\n" not in message and missing in message, message
    assert {k for k in emulator.arm.resources if "roleassignments" not in k} == before


def test_a_reader_is_refused_the_registry_before_any_write(
    prefect_harness: None, emulator: Emulator
) -> None:
    state = emulator.state
    principal = state.add_service_principal(name="byok-reader-only")
    state.grant_role(
        principal.object_id, "Reader", f"/subscriptions/{emulator.identity.subscription_id}"
    )
    emulator_credentials(
        emulator, client_id=principal.client_id, client_secret=principal.secret
    ).save("reader-only", overwrite=True)
    before = set(emulator.arm.resources)
    message = refused(
        create_encrypted_registry, registry_request("reader-only").model_dump(mode="json")
    )
    assert (
        "\n" not in message
        and "lack Microsoft.Resources/subscriptions/resourceGroups/write" in message
    )
    assert "Microsoft.ContainerRegistry/registries/write" in message
    assert set(emulator.arm.resources) == before
