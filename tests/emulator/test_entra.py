"""Entra ID: the real ClientSecretCredential against the emulator's token endpoint."""

from __future__ import annotations

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError

from blocks.azure import AzureCredentials
from clients.azure import AzureClients
from emulator.server import Emulator
from tests.conftest import emulator_credentials


def test_client_secret_credential_gets_a_token(
    azure_credentials: AzureCredentials, emulator: Emulator
) -> None:
    token = azure_credentials.get_credential().get_token("https://management.azure.com/.default")
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["aud"] == "https://management.azure.com"
    assert claims["oid"] == emulator.state.service_principal.object_id
    assert claims["tid"] == emulator.identity.tenant_id
    assert emulator.requests.find("POST", r"/oauth2/v2.0/token$")


def test_bad_secret_fails_clearly(emulator: Emulator) -> None:
    credentials = emulator_credentials(emulator, client_secret="wrong")
    with pytest.raises(ClientAuthenticationError) as info:
        credentials.get_credential().get_token("https://management.azure.com/.default")
    assert "invalid_client" in str(info.value) or "AADSTS7000215" in str(info.value)
    assert "wrong" not in str(info.value)


def test_bad_secret_fails_an_arm_call_without_reaching_arm(emulator: Emulator) -> None:
    clients = AzureClients(emulator_credentials(emulator, client_secret="wrong"))
    with pytest.raises(ClientAuthenticationError):
        clients.resources().resource_groups.get("rg")
    assert not emulator.requests.find(path=r"^/subscriptions/")


def test_unknown_tenant_is_refused(emulator: Emulator) -> None:
    credentials = emulator_credentials(emulator, tenant_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(ClientAuthenticationError):
        credentials.get_credential().get_token("https://management.azure.com/.default")


def test_arm_refuses_requests_without_a_token(emulator: Emulator) -> None:
    import requests

    response = requests.get(
        f"{emulator.base_url}/subscriptions/{emulator.identity.subscription_id}"
        "/resourceGroups?api-version=2025-04-01",
        verify=str(emulator.ca_path),
        timeout=10,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"


def test_graph_lists_the_callers_tenant_only_and_refuses_arm_tokens(emulator: Emulator) -> None:
    import requests

    assert emulator.state is not None
    other_tenant = emulator.state.add_tenant()
    stranger = emulator.state.add_service_principal(tenant_id=other_tenant, name="stranger")
    colleague = emulator.state.add_service_principal(name="colleague")
    credential = emulator_credentials(emulator).get_credential()

    def graph(method: str, path: str, scope: str, **kwargs: object) -> requests.Response:
        token = credential.get_token(scope).token
        return requests.request(
            method,
            f"{emulator.base_url}/v1.0{path}",
            headers={"Authorization": f"Bearer {token}"},
            verify=str(emulator.ca_path),
            timeout=10,
            **kwargs,  # type: ignore[arg-type]
        )

    scope = emulator.base_url + "//.default"  # as the CLI asks: its Graph resource id + /.default
    listed = graph("GET", "/servicePrincipals", scope).json()["value"]
    assert {sp["displayName"] for sp in listed} == {"byok-flows", "colleague"}
    spn = f"servicePrincipalNames/any(c:c eq '{colleague.client_id}')"
    by_spn = graph("GET", f"/servicePrincipals?$filter={spn}", scope).json()["value"]
    assert [sp["id"] for sp in by_spn] == [colleague.object_id]
    found = graph(
        "POST", "/directoryObjects/getByIds", scope,
        json={"ids": [stranger.object_id, colleague.object_id], "types": ["servicePrincipal"]},
    ).json()["value"]  # fmt: skip
    assert [(sp["id"], sp["@odata.type"]) for sp in found] == [
        (colleague.object_id, "#microsoft.graph.servicePrincipal")
    ]
    me = graph("GET", "/me", scope)
    assert (me.status_code, me.json()["error"]["code"]) == (400, "BadRequest")
    odd = graph("GET", "/servicePrincipals?$filter=tags/any(t:t eq 'x')", scope)
    assert (odd.status_code, odd.json()["error"]["code"]) == (400, "Request_UnsupportedQuery")
    arm = graph("GET", "/servicePrincipals", "https://management.azure.com/.default")
    assert arm.status_code == 401
