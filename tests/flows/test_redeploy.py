"""A redeploy keeps what a user owns of the scheduled deployments: their schedule state and
parameters come from Prefect variables, through the real `prefect deploy` of
deployments/prefect.yaml against a test Prefect server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL
from prefect.utilities.importtools import import_object

ROOT = Path(__file__).resolve().parents[2]
schedule_settings = import_object(f"{ROOT}/deployments/user_settings.py:schedule_settings")

FLEET = "rotate-customer-keys/rotate-customer-keys-monthly"
IBM = "rotate-ibm-root-key/rotate-ibm-root-key-monthly"
USER_REQUEST = {"azure_credentials_block": "my-azure", "older_than_days": 80}


def prefect(*command: str) -> None:
    """The prefect CLI, as a user (or CI) runs it from the repository root."""
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "BYOK_FLOWS_DIR": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def deploy() -> None:
    """`prefect deploy` of the scheduled deployments, as CI redeploys them."""
    names = [arg for name in (FLEET, IBM) for arg in ("--name", name.split("/")[1])]
    prefect("deploy", *names, "--prefect-file", "deployments/prefect.yaml")


async def deployed(name: str) -> tuple[list[bool], list[str], dict[str, Any]]:
    """A deployment's schedules (active, cron) and parameters, as the server has them."""
    async with get_client() as client:
        found = await client.read_deployment_by_name(name)
        crons = [str(getattr(s.schedule, "cron", "")) for s in found.schedules]
        return [s.active for s in found.schedules], crons, found.parameters


async def unset_variables() -> None:
    """No variable of the scheduled deployments set; the work pool exists."""
    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name="byok-process", type="process"))
        for prefix in ("fleet", "ibm"):
            for field in ("active", "request"):
                with contextlib.suppress(ObjectNotFound):
                    await client.delete_variable_by_name(f"byok_{prefix}_rotation_{field}")


@pytest.mark.slow
def test_redeploy_keeps_the_users_schedule_and_parameters(prefect_harness: None) -> None:
    asyncio.run(unset_variables())
    deploy()
    for name in (FLEET, IBM):  # nothing set: inactive, no demo names baked in
        assert asyncio.run(deployed(name))[::2] == ([False], {"request": {}})

    prefect("variable", "set", "byok_fleet_rotation_request", json.dumps(USER_REQUEST))
    prefect("variable", "set", "byok_fleet_rotation_active", "true")
    deploy()  # the redeploy (CI) after the user set the schedule on and the parameters
    assert asyncio.run(deployed(FLEET)) == ([True], ["0 3 1 * *"], {"request": USER_REQUEST})
    assert asyncio.run(deployed(IBM))[::2] == ([False], {"request": {}})


@pytest.mark.parametrize(
    ("active", "user_request", "message"),
    [
        ("yes", "", "active = 'yes': must be the JSON value true or false"),
        (True, "rg-user", "request = 'rg-user': must be a JSON object"),
    ],
)
def test_a_malformed_variable_stops_the_deploy(
    active: Any, user_request: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        schedule_settings(active, user_request)
