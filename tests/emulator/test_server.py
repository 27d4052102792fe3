"""The emulator's HTTP layer: one werkzeug application for every origin (COS included), with
keep-alive, one fault layer, one request log, and private files."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from ibm_botocore.exceptions import ClientError

from clients.azure import AzureClients
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.files import write_private
from emulator.server import Emulator


def connection(emulator: Emulator) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(emulator.ca_path))
    port = int(emulator.base_url.rsplit(":", 1)[1])
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)


def test_one_connection_serves_many_requests(emulator: Emulator) -> None:
    conn = connection(emulator)
    path = f"/{emulator.identity.tenant_id}/v2.0/.well-known/openid-configuration"
    sockets = []
    for _ in range(3):
        conn.request("GET", path)
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["issuer"]
        assert answer.getheader("Connection") != "close"
        sockets.append(conn.sock)
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3
    conn.close()


def test_reset_after_serves_then_resets_the_connection(
    emulator: Emulator, azure: AzureClients
) -> None:
    emulator.faults.add(Fault("reset-after", method="PUT", path="resourceGroups/rg-rst$"))
    token = azure.credential.get_token("https://management.azure.com/.default").token
    conn = connection(emulator)
    conn.request(
        "PUT",
        f"/subscriptions/{emulator.identity.subscription_id}/resourceGroups/rg-rst"
        "?api-version=2025-04-01",
        body=b'{"location": "westeurope"}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with pytest.raises(ConnectionResetError):
        conn.getresponse()
    assert azure.resources().resource_groups.check_existence("rg-rst")
    assert [e.status for e in emulator.requests.find("PUT", "rg-rst$")] == [0]


def test_cos_goes_through_the_same_faults_and_log(emulator: Emulator, ibm: IBMClients) -> None:
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket="byok-layer", CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    s3.put_object(Bucket="byok-layer", Key="disk.vhd", Body=b"x" * 1000)
    emulator.faults.add(Fault("reset", method="GET", path="^/byok-layer/disk.vhd$"))
    emulator.faults.add(
        Fault("status", method="HEAD", path="^/byok-layer/", status=403, code="AccessDenied")
    )
    assert s3.get_object(Bucket="byok-layer", Key="disk.vhd")["Body"].read() == b"x" * 1000
    with pytest.raises(ClientError) as refused:
        s3.head_object(Bucket="byok-layer", Key="disk.vhd")
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "403")
    with pytest.raises(ClientError) as xml:
        emulator.faults.add(Fault("status", method="GET", path="^/byok-layer/", status=409))
        s3.get_object(Bucket="byok-layer", Key="disk.vhd")
    assert xml.value.response["Error"]["Code"] == "InjectedFault"
    logged = [(e.method, e.status) for e in emulator.requests.find(path="^/byok-layer/disk.vhd$")]
    assert logged == [("PUT", 200), ("GET", 0), ("GET", 200), ("HEAD", 403), ("GET", 409)]
    assert {e.origin for e in emulator.requests.find(path="^/byok-layer")} == {"cos"}
    assert {e.port for e in emulator.requests.find(origin="cos")} == {
        int(emulator.cos.endpoint.rsplit(":", 1)[1])
    }


def test_private_files_are_0600_from_the_first_byte(emulator: Emulator, tmp_path: Path) -> None:
    assert emulator.tls.server_key.stat().st_mode & 0o777 == 0o600
    target = tmp_path / "endpoints.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert (target.read_bytes(), target.stat().st_mode & 0o777) == (b"new", 0o600)
    assert os.listdir(tmp_path) == ["endpoints.json"]


def test_the_emulator_imports_nothing_of_the_project() -> None:
    probe = (
        "import sys, emulator.server; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('byok', 'tasks', 'flows', 'clients', 'blocks')])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/_emulator/requests", 200), ("GET", "/_emulator/throttle", 200),
     ("POST", "/_emulator/reset", 204)],
)  # fmt: skip
def test_the_admin_api_needs_the_token_the_emulator_printed(
    emulator: Emulator, method: str, path: str, status: int
) -> None:
    url, ca = emulator.base_url + path, str(emulator.ca_path)
    token = emulator.admin_token
    for wrong in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": token}):
        answer = requests.request(method, url, headers=wrong, verify=ca, timeout=10)
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "Unauthorized")
    right = {"Authorization": f"Bearer {token}"}
    assert requests.request(method, url, headers=right, verify=ca, timeout=10).status_code == status


def test_a_port_a_vault_was_served_on_is_never_given_to_another_vault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients cache a vault's challenge (its tenant) per origin: the OS handing back a port
    a closed vault used is refused, the next one taken."""
    import emulator.server as server

    ports = iter([8001, 8001, 8002])
    closed: list[int] = []

    class FakeListener:
        origin = "vault"

        def __init__(self, *args: object) -> None:
            self.server_address = ("127.0.0.1", next(ports))

        def serve_forever(self, **kwargs: object) -> None:
            pass

        def server_close(self) -> None:
            closed.append(self.server_address[1])

    monkeypatch.setattr(server, "Listener", FakeListener)
    emulator = server.Emulator()
    assert emulator._listen("vault") == 8001
    emulator._listeners.clear()  # the vault's origin closed, its port free again
    assert emulator._listen("vault") == 8002
    assert closed == [8001]
