"""IBM IAM through the real SDKs: token exchange, policies, service IDs and API keys."""

from __future__ import annotations

import jwt
import pytest
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator, IAMAuthenticator
from ibm_platform_services import IamPolicyManagementV1
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from clients.ibm import IBMClients
from emulator.server import Emulator
from tests.conftest import ROLE


def _token(credentials: IBMCloudCredentials, api_key: str) -> str:
    authenticator = IAMAuthenticator(api_key, url=credentials.iam_url)
    authenticator.token_manager.http_config = {"verify": credentials.ca_bundle}
    return authenticator.token_manager.get_token()


def test_api_key_exchanged_for_a_signed_token(ibm_credentials: IBMCloudCredentials) -> None:
    token = _token(ibm_credentials, ibm_credentials.api_key.get_secret_value())
    claims = jwt.decode(token, options={"verify_signature": False})
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["account"]["bss"] == ibm_credentials.account_id
    assert claims["iam_id"].startswith("IBMid-") and claims["sub_type"] == "user"
    assert claims["exp"] - claims["iat"] == 3600


def test_bad_api_key_is_refused_with_iams_error(ibm_credentials: IBMCloudCredentials) -> None:
    with pytest.raises(ApiException) as caught:
        _token(ibm_credentials, "not-a-key-of-this-account")
    assert caught.value.status_code == 400
    assert caught.value.http_response.json()["errorCode"] == "BXNIM0415E"


def test_forged_token_is_refused(emulator: Emulator, ibm_credentials: IBMCloudCredentials) -> None:
    forged = jwt.encode({"iam_id": "IBMid-x", "account": {"bss": "x"}}, "k" * 32, "HS256")
    policies = IamPolicyManagementV1(BearerTokenAuthenticator(forged))
    policies.set_service_url(ibm_credentials.iam_url)
    policies.set_http_config({"verify": ibm_credentials.ca_bundle})
    with pytest.raises(ApiException) as caught:
        policies.list_policies(account_id=emulator.ibm_identity.account_id)
    assert caught.value.status_code == 401


def test_policy_lifecycle(ibm: IBMClients, ibm_credentials: IBMCloudCredentials, ibm_grant) -> None:
    policies, account = ibm.policies(), ibm_credentials.account_id
    created = ibm_grant(None, "kms", "Reader", source="server-protect")
    assert created["type"] == "authorization" and created["state"] == "active"
    assert created["roles"][0]["display_name"] == "Reader"

    listed = policies.list_policies(account_id=account, type="authorization").get_result()
    assert [p["id"] for p in listed["policies"]] == [created["id"]]
    assert (
        policies.get_policy(policy_id=created["id"]).get_result()["subjects"]
        == (created["subjects"])
    )
    with pytest.raises(ApiException) as duplicate:
        ibm_grant(None, "kms", "Reader", source="server-protect")
    assert duplicate.value.status_code == 409

    assert policies.delete_policy(policy_id=created["id"]).get_status_code() == 204
    with pytest.raises(ApiException) as gone:
        policies.get_policy(policy_id=created["id"])
    assert gone.value.status_code == 404


def test_policy_without_account_names_the_field(ibm: IBMClients) -> None:
    with pytest.raises(ApiException) as caught:
        ibm.policies().create_policy(
            type="access",
            subjects=[{"attributes": [{"name": "iam_id", "value": "iam-ServiceId-x"}]}],
            roles=[{"role_id": ROLE + "Reader"}],
            resources=[{"attributes": [{"name": "serviceName", "value": "kms"}]}],
        )
    assert caught.value.status_code == 400
    assert "resources accountId ''" in caught.value.message


def test_service_id_and_api_key_lifecycle(
    ibm: IBMClients, ibm_credentials: IBMCloudCredentials
) -> None:
    identity, account = ibm.identity(), ibm_credentials.account_id
    service_id = identity.create_service_id(account_id=account, name="importer").get_result()
    assert service_id["iam_id"] == "iam-" + service_id["id"]
    created = identity.create_api_key(name="k", iam_id=service_id["iam_id"]).get_result()
    assert created["apikey"]

    fetched = identity.get_api_key(id=created["id"]).get_result()
    assert "apikey" not in fetched and fetched["iam_id"] == service_id["iam_id"]
    listed = identity.list_api_keys(account_id=account, iam_id=service_id["iam_id"]).get_result()
    assert [k["id"] for k in listed["apikeys"]] == [created["id"]]
    claims = jwt.decode(
        _token(ibm_credentials, created["apikey"]), options={"verify_signature": False}
    )
    assert claims["iam_id"] == service_id["iam_id"] and claims["sub_type"] == "ServiceId"

    names = identity.list_service_ids(account_id=account, name="importer").get_result()
    assert [s["id"] for s in names["serviceids"]] == [service_id["id"]]
    assert identity.delete_service_id(id=service_id["id"]).get_status_code() == 204
    with pytest.raises(ApiException) as caught:
        _token(ibm_credentials, created["apikey"])  # its keys went with it
    assert caught.value.status_code == 400


def test_service_id_cannot_manage_identities(
    ibm_credentials: IBMCloudCredentials, ibm_service_id: tuple[str, str]
) -> None:
    _, key = ibm_service_id
    clients = IBMClients(ibm_credentials.model_copy(update={"api_key": SecretStr(key)}))
    with pytest.raises(ApiException) as caught:
        clients.identity().create_service_id(account_id=ibm_credentials.account_id, name="x")
    assert caught.value.status_code == 403
