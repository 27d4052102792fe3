"""Fixtures of the flow tests: least privilege (authorization enforced, the flows' block
holding only the README's roles for the flows of the test module)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from prefect import Flow

from clients.context import forget as forget_client_contexts
from emulator.server import Emulator
from emulator.services.entra.models import Principal
from tests.conftest import AZURE_BLOCK, emulator_credentials
from tests.helpers import FLOW_PRINCIPAL

ROOT = Path(__file__).resolve().parents[2]
# The test set-up's own hand (vaults, images, sets made before a flow runs, and checks).
ADMIN_ROLES = ("Owner", "Key Vault Administrator")


@cache
def readme_roles() -> tuple[tuple[frozenset[str], str], ...]:
    """(flows, role) per row of the README's permissions table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("### Permissions", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and "`" in cells[0]:
            role = re.sub(r"\s*\(.*\)$", "", cells[1])
            rows.append((frozenset(re.findall(r"`([^`]+)`", cells[0])), role))
    assert rows, "README.md: no permissions table"
    return tuple(rows)


def roles_for(flows: set[str]) -> set[str]:
    """The roles the README asks to grant for `flows`."""
    return {role for names, role in readme_roles() if names & flows}


def module_flows(module: object) -> set[str]:
    """The names of the Prefect flows a test module imports."""
    return {f.name for f in vars(module).values() if isinstance(f, Flow)}


def enforce(emulator: Emulator) -> None:
    """ARM checks every write against role assignments; the set-up's principal is Owner and
    Key Vault Administrator of the subscription."""
    state = emulator.state
    sub = f"/subscriptions/{emulator.identity.subscription_id}"
    for role in ADMIN_ROLES:
        state.grant_role(state.service_principal.object_id, role, sub)
    state.arm.enforce_authorization = True


def add_flow_principal(
    emulator: Emulator, flows: set[str], client_id: str | None = None, secret: str | None = None
) -> Principal:
    """The flows' principal, holding the README's roles for `flows` at subscription scope."""
    state = emulator.state
    principal = state.add_service_principal(name=FLOW_PRINCIPAL, client_id=client_id, secret=secret)
    for role in roles_for(flows):
        state.grant_role(
            principal.object_id, role, f"/subscriptions/{emulator.identity.subscription_id}"
        )
    return principal


@pytest.fixture(autouse=True)
def enforced_authorization(request: pytest.FixtureRequest) -> None:
    """Every flow test that uses the emulator runs with authorization enforced."""
    if "emulator" in request.fixturenames:
        enforce(request.getfixturevalue("emulator"))


@pytest.fixture
def flow_principal(emulator: Emulator, request: pytest.FixtureRequest) -> Principal:
    """The principal of the flows' credentials block: the README's roles for the flows this
    test module runs, at subscription scope, and nothing else. A module running a flow the
    table does not list yet runs it as the set-up's Owner principal, with a warning."""
    flows = module_flows(request.module)
    unlisted = flows - {name for names, _ in readme_roles() for name in names}
    if unlisted:
        warnings.warn(
            f"{sorted(unlisted)}: no row in README.md's permissions table; "
            "run as the set-up's Owner principal",
            stacklevel=1,
        )
        return emulator.state.service_principal
    return add_flow_principal(emulator, flows)


@pytest.fixture
def reset_emulator(
    emulator: Emulator, flow_principal: Principal, request: pytest.FixtureRequest
) -> Callable[[], None]:
    """`emulator.reset` for tests that reset mid-test (crash matrices): a fresh state with
    authorization enforced and the same flows' principal (same id and secret) and roles."""

    def reset() -> None:
        emulator.reset()
        forget_client_contexts()
        enforce(emulator)
        if flow_principal.display_name != FLOW_PRINCIPAL:
            return
        add_flow_principal(
            emulator,
            module_flows(request.module),
            flow_principal.client_id,
            flow_principal.secret,
        )

    return reset


@pytest.fixture
def azure_block(prefect_harness: None, emulator: Emulator, flow_principal: Principal) -> str:
    """The name of a saved credentials block of the least-privileged principal."""
    emulator_credentials(
        emulator, client_id=flow_principal.client_id, client_secret=flow_principal.secret
    ).save(AZURE_BLOCK, overwrite=True)
    return AZURE_BLOCK


@pytest.fixture
def new_subscription(
    emulator: Emulator, flow_principal: Principal, request: pytest.FixtureRequest
) -> Callable[[str], str]:
    """`new_subscription(name)`: another subscription of the home tenant, where the set-up is
    Owner and the flows' principal holds the same roles as in the home one."""

    def add(name: str) -> str:
        state = emulator.state
        sub = state.add_subscription(name=name)
        for role in ADMIN_ROLES:
            state.grant_role(state.service_principal.object_id, role, f"/subscriptions/{sub}")
        for role in roles_for(module_flows(request.module)):
            state.grant_role(flow_principal.object_id, role, f"/subscriptions/{sub}")
        return sub

    return add
