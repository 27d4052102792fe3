"""What the real Azure CLI needs of the emulator beyond plain ARM: its Microsoft Graph
look-ups (role assignments by assignee, their listing with principal names, a vault with an
access policy for the caller), template deployments from a file with comments, and cloud
metadata that names nothing outside the machine."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from emulator.server import Emulator
from tests.cli.azcli import Az, logged_in, needs_az

pytestmark = needs_az


@pytest.fixture(scope="module")
def az(emulator_session: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Az:
    """The CLI logged in to a fresh emulator state, with a second service principal."""
    emulator_session.reset()
    return logged_in(emulator_session, tmp_path_factory.mktemp("azure-cli-commands"))


def graph_requests(emulator: Emulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in emulator.requests.find(path="^/v1.0/")]


def test_role_assignment_by_assignee_then_listed_with_its_name(
    az: Az, emulator_session: Emulator
) -> None:
    state = emulator_session.state
    assert state is not None
    other = state.add_service_principal(name="byok-reader")
    az("group", "create", "-n", "rg-graph", "-l", "westeurope")
    scope = f"/subscriptions/{emulator_session.identity.subscription_id}/resourceGroups/rg-graph"
    emulator_session.requests.clear()

    made = az("role", "assignment", "create", "--assignee", other.client_id, "--role", "Reader",
              "--scope", scope)  # fmt: skip

    props = made["properties"]  # az 2.91 shows the SDK model's nesting
    assert props["principalId"] == other.object_id
    assert props["principalType"] == "ServicePrincipal"
    assert props["roleDefinitionId"].endswith("/acdd72a7-3385-48ef-bd42-f606fba81ae7")  # Reader
    assert "GET /v1.0/servicePrincipals" in graph_requests(emulator_session)
    listed = az("role", "assignment", "list", "--assignee", other.client_id, "--scope", scope)
    assert [(a["principalName"], a["roleDefinitionName"]) for a in listed] == [
        (other.client_id, "Reader")
    ]
    assert "POST /v1.0/directoryObjects/getByIds" in graph_requests(emulator_session)
    unknown = az.run("role", "assignment", "create", "--assignee", "nobody-at-all", "--role",
                     "Reader", "--scope", scope)  # fmt: skip
    assert unknown.returncode != 0
    assert "Cannot find user or service principal in graph database for 'nobody-at-all'" in (
        unknown.stderr
    )


def test_vault_with_access_policies_names_the_caller(az: Az, emulator_session: Emulator) -> None:
    az("group", "create", "-n", "rg-graph-kv", "-l", "westeurope")
    emulator_session.requests.clear()

    vault = az("keyvault", "create", "-n", "kv-graph-1", "-g", "rg-graph-kv", "-l",
               "westeurope", "--enable-rbac-authorization", "false")  # fmt: skip

    state = emulator_session.state
    assert state is not None
    policies = vault["properties"]["accessPolicies"]
    assert [p["objectId"] for p in policies] == [state.service_principal.object_id]
    assert graph_requests(emulator_session)[:2] == ["GET /v1.0/me", "GET /v1.0/servicePrincipals"]


def test_cloud_metadata_names_only_the_emulator(az: Az, emulator_session: Emulator) -> None:
    cloud = az("cloud", "show")
    local = urlsplit(emulator_session.base_url).netloc
    for name, value in cloud["endpoints"].items():
        if name in ("activeDirectoryResourceId", "management"):
            continue  # token audiences, issued by the emulator's authority only
        assert value is None or urlsplit(value).netloc == local, (name, value)
    for name, value in cloud["suffixes"].items():
        assert value is None or value.endswith(".byok-emulator.invalid"), (name, value)
    assert cloud["endpoints"]["microsoftGraphResourceId"] == emulator_session.base_url + "/"


TEMPLATE = """{
  // what `az deployment group create --template-file` sends as it is: comments included
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "contentVersion": "1.0.0.0",
  /* one identity, named by a parameter */
  "parameters": {"name": {"type": "string"}},
  "variables": {"type": "Microsoft.ManagedIdentity/userAssignedIdentities"},
  "resources": [
    {
      "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
      "apiVersion": "2023-01-31",
      "name": "[parameters('name')]",
      "location": "westeurope",
    },
  ],
  "outputs": {
    "id": {
      "type": "string",
      "value": "[resourceId(variables('type'), parameters('name'))]"
    }
  }
}
"""


def test_template_deployment_from_a_file_with_comments(
    az: Az, emulator_session: Emulator, tmp_path: Path
) -> None:
    template = tmp_path / "identity.json"
    template.write_text(TEMPLATE)
    az("group", "create", "-n", "rg-deploy", "-l", "westeurope")

    deployed = az("deployment", "group", "create", "-g", "rg-deploy", "-n", "id-deploy",
                  "--template-file", str(template), "--parameters", "name=id-from-template",
                  "--mode", "incremental")  # fmt: skip

    assert deployed["properties"]["provisioningState"] == "Succeeded"
    identity = az("identity", "show", "-g", "rg-deploy", "-n", "id-from-template")
    assert deployed["properties"]["outputs"]["id"]["value"] == identity["id"]
    assert emulator_session.requests.find(method="POST", path="/deployments/id-deploy/validate")
    template.write_text(TEMPLATE.replace('"name": "[parameters(', '"name": "[variables('))
    refused = az.run("deployment", "group", "create", "-g", "rg-deploy", "-n", "bad",
                     "--template-file", str(template), "--parameters", "name=x")  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    (validated,) = emulator_session.requests.find(method="POST", path="/deployments/bad/")
    assert validated.status == 400
    assert not emulator_session.requests.find(method="PUT", path="/deployments/bad")


def az_origin(az: Az) -> str:
    """The emulator origin the CLI's cloud points at."""
    return str(az("cloud", "show")["endpoints"]["resourceManager"]).rstrip("/")


def test_aks_with_service_defaults_and_arm_listings(az: Az, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    ssh_key = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    az("group", "create", "-n", "rg-aks-cli", "-l", "westeurope")
    az("aks", "create", "-g", "rg-aks-cli", "-n", "aks-cli", "--node-count", "1",
       "--ssh-key-value", ssh_key, "--no-wait")  # fmt: skip
    pool = az("aks", "nodepool", "add", "-g", "rg-aks-cli", "--cluster-name", "aks-cli",
              "-n", "pool2", "--node-count", "1")  # fmt: skip
    cluster = az("aks", "show", "-g", "rg-aks-cli", "-n", "aks-cli")

    versions = az("aks", "get-versions", "-l", "westeurope")["values"]
    (default,) = [v for v in versions if v["isDefault"]]
    patch = next(iter(default["patchVersions"]))
    assert cluster["kubernetesVersion"] == patch
    assert {
        (p["name"], p["orchestratorVersion"], p["vmSize"]) for p in cluster["agentPoolProfiles"]
    } == {
        ("nodepool1", patch, "Standard_DS2_v2"),
        ("pool2", patch, "Standard_DS2_v2"),
    }
    assert pool["provisioningState"] == "Succeeded"
    assert "westeurope" in {loc["name"] for loc in az("account", "list-locations")}
    listed = az("resource", "list", "-g", "rg-aks-cli")
    assert [r["id"] for r in listed] == [cluster["id"]]
    shown = az("resource", "show", "-g", "rg-aks-cli", "-n", "aks-cli", "--resource-type",
               "Microsoft.ContainerService/managedClusters")  # fmt: skip
    assert shown["id"] == cluster["id"]
    kubeconfig = tmp_path / "kubeconfig"
    az("aks", "get-credentials", "-g", "rg-aks-cli", "-n", "aks-cli", "--file", str(kubeconfig))
    assert f"server: {az_origin(az)}/k8s/" in kubeconfig.read_text()
