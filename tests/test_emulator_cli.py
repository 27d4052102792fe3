"""`byok emulator` as a user runs it: a separate process, driven through the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from ibm_cloud_sdk_core import ApiException
from prefect.settings import PREFECT_API_URL

from blocks.azure import AzureCredentials
from blocks.ibm import IBMCloudCredentials
from clients.ibm import IBMClients
from console.cli import main
from console.emulator_cli import publish
from emulator.server import Emulator
from tests import prefect_server


def byok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )


def serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`byok emulator serve ARGS` from `tmp_path` (with the test Prefect server's API), once
    its endpoints are published."""
    env = {
        **os.environ,
        "BYOK_EMULATOR_DIR": str(tmp_path),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "emulator", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    endpoints_file = tmp_path / "endpoints.json"
    deadline = time.monotonic() + 30
    while not endpoints_file.exists():
        assert time.monotonic() < deadline and server.poll() is None
        time.sleep(0.1)
    return server, json.loads(endpoints_file.read_text())


def arm_token(endpoints: dict[str, str]) -> str:
    """A token of the emulator's service principal for ARM."""
    return requests.post(
        f"{endpoints['authority']}/{endpoints['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": endpoints["client_id"],
            "client_secret": endpoints["client_secret"],
            "scope": "https://management.azure.com/.default",
        },
        verify=endpoints["ca_bundle"],
        timeout=10,
    ).json()["access_token"]


def subscriptions(endpoints: dict[str, str]) -> list[dict[str, str]]:
    """`GET /subscriptions` with the emulator's service principal."""
    return requests.get(
        f"{endpoints['arm']}subscriptions?api-version=2022-12-01",
        headers={"Authorization": f"Bearer {arm_token(endpoints)}"},
        verify=endpoints["ca_bundle"],
        timeout=10,
    ).json()["value"]


def throttled_reads(endpoints: dict[str, str]) -> list[tuple[int, str | None]]:
    """Two ARM reads with the emulator's service principal: (status, reads remaining)."""
    token = arm_token(endpoints)
    url = f"{endpoints['arm']}subscriptions/{endpoints['subscription_id']}/resourcegroups"
    answers = [
        requests.get(
            url + "?api-version=2025-04-01",
            headers={"Authorization": f"Bearer {token}"},
            verify=endpoints["ca_bundle"],
            timeout=10,
        )
        for _ in range(2)
    ]
    return [
        (a.status_code, a.headers.get("x-ms-ratelimit-remaining-subscription-reads"))
        for a in answers
    ]


def test_serve_then_inject_a_fault_from_the_cli(prefect_harness: None, tmp_path: Path) -> None:
    env = {**os.environ, "BYOK_EMULATOR_DIR": str(tmp_path)}
    server, endpoints = serve(
        tmp_path, "--throttle", "--throttle-reads", "1/0.2", "--subscriptions", "2",
        "--ibm-accounts", "2", "--save-block", "cli-azure", "--save-ibm-block", "cli-ibm",
    )  # fmt: skip
    try:
        assert len(subscriptions(endpoints)) == 2
        # printed once the blocks were saved
        assert server.stdout and server.stdout.readline().startswith("byok cloud emulator running")
        other = IBMCloudCredentials.load("cli-ibm-2")
        assert isinstance(other, IBMCloudCredentials)
        assert other.account_id == endpoints["ibm_other_account_ids"] != endpoints["ibm_account_id"]
        # the second account's own API key and instance answer; the seeded one's instance
        # is not its own
        keys = IBMClients(other).key_protect(endpoints["ibm_other_key_protect_instances"])
        assert keys.create_key("root")["crn"].split(":")[6] == f"a/{other.account_id}"
        seeded = IBMClients(other).key_protect(endpoints["ibm_key_protect_instance"])
        with pytest.raises(ApiException) as refused:
            seeded.list_keys()
        assert refused.value.status_code == 401
        for name in ("endpoints.json", "az-env.sh", "tls/server-key.pem"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
        assert "az login --service-principal" in (tmp_path / "az-env.sh").read_text()
        assert throttled_reads(endpoints) == [(200, "0"), (429, "0")]
        rival = byok("emulator", "serve", env=env)
        assert rival.returncode != 0 and "already running" in rival.stderr
        added = byok(
            "emulator",
            "fault",
            "add",
            "status",
            "--status",
            "503",
            "--path",
            "openid-configuration",
            env=env,
        )
        assert added.returncode == 0, added.stderr
        tenant = endpoints["tenant_id"]
        url = f"{endpoints['authority']}/{tenant}/v2.0/.well-known/openid-configuration"
        first = requests.get(url, verify=endpoints["ca_bundle"], timeout=10)
        second = requests.get(url, verify=endpoints["ca_bundle"], timeout=10)
        assert (first.status_code, second.status_code) == (503, 200)
        log = byok("emulator", "requests", "--path", "openid", env=env)
        assert [json.loads(line)["status"] for line in log.stdout.splitlines()] == [503, 200]
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert not (tmp_path / "endpoints.json").exists()
    assert not (tmp_path / "az-env.sh").exists()
    out = server.stdout.read() if server.stdout else ""
    assert f"other account     {endpoints['ibm_other_account_ids']}  (Key Protect" in out
    assert f"source {tmp_path.resolve() / 'az-env.sh'}" in out
    ibm, azure = IBMCloudCredentials.load("cli-ibm"), AzureCredentials.load("cli-azure")
    assert isinstance(ibm, IBMCloudCredentials) and isinstance(azure, AzureCredentials)
    assert ibm.api_key.get_secret_value() == endpoints["ibm_api_key"]
    assert ibm.ca_bundle == azure.ca_bundle == endpoints["ca_bundle"]
    assert azure.client_id == endpoints["client_id"]


def test_seed_a_fleet_in_the_published_emulator(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(emulator, tmp_path)
    seed = ["emulator", "--state-dir", str(tmp_path), "seed", "--subscriptions", "3"]
    assert main([*seed, "--resources", "30"]) == 0
    out = capsys.readouterr().out
    made = out.split("fleet of ", 1)[1].split(" ", 1)[0]
    assert int(made) >= 30 and "in 3 subscriptions" in out and f"; {made} made now" in out
    subs = {r["id"].split("/")[2] for r in emulator.arm.resources.values() if "/" in r["id"]}
    assert len(subs) == 3


def test_save_block_without_a_prefect_server_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        api = f"http://127.0.0.1:{sock.getsockname()[1]}/api"  # nothing listens there
    with prefect_server.using(api), pytest.raises(SystemExit) as stopped:
        main(["emulator", "--state-dir", str(tmp_path), "serve", "--save-ibm-block", "cli-ibm"])
    message = str(stopped.value.code)
    assert message.startswith("byok emulator: cannot save the block 'cli-ibm'") and api in message
    assert not (tmp_path / "endpoints.json").exists()  # the emulator stopped and retracted


@pytest.mark.parametrize(
    "command", [["fault", "add", "status", "--path", "["], ["requests", "--path", "(a"]]
)
def test_a_bad_path_regex_is_refused_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["emulator", "--state-dir", str(tmp_path), *command])  # no emulator there
    assert stopped.value.code == 2
    assert f"argument --path: '{command[-1]}': must be a regular expression" in (
        capsys.readouterr().err
    )


def test_output_into_a_closed_pipe_ends_quietly(emulator: Emulator, tmp_path: Path) -> None:
    endpoints = publish(emulator, tmp_path)
    tenant = endpoints["tenant_id"]
    url = f"{endpoints['authority']}/{tenant}/v2.0/.well-known/openid-configuration"
    requests.get(url, verify=endpoints["ca_bundle"], timeout=10)  # a line for the log
    reader, writer = os.pipe()
    os.close(reader)  # `| head` that has already exited
    try:
        done = subprocess.run(
            [sys.executable, "-m", "console.cli", "emulator", "--state-dir", str(tmp_path),
             "requests"],
            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (1, "")
