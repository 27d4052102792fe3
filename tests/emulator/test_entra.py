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
