"""A principal without the roles the README lists for a flow gets the flow's one-line refusal
(no traceback) and nothing is left half-created."""

from __future__ import annotations

from emulator.server import Emulator
from flows.disk_encryption_set import prepare_disk_encryption_set
from tests.conftest import emulator_credentials
from tests.flows.refusals import refused
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
