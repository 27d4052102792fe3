"""IBM state keyed by account and region (moto-style): two accounts, each through the real
SDKs with its own API key, never see each other's keys, policies, VPCs or servers; a
regional host reaches only that region's Key Protect instances."""

from __future__ import annotations

import pytest
import requests
import SoftLayer
from ibm_botocore.exceptions import ClientError
from ibm_cloud_sdk_core import ApiException

from clients.ibm import IBMClients
from console.emulator_blocks import emulator_ibm_credentials
from emulator.http import Request
from emulator.ibm_accounts import region_of
from emulator.server import Emulator
from tests.emulator.test_ibm_softlayer import seed_order


@pytest.fixture
def other(emulator: Emulator) -> tuple[IBMClients, str, str]:
    """Clients of a second account: (clients, account id, its Key Protect instance)."""
    identity = emulator.state.add_ibm_account()
    return (
        IBMClients(emulator_ibm_credentials(emulator, identity)),
        identity.account_id,
        identity.key_protect_instance,
    )


def status_of(call: object) -> int:
    with pytest.raises(ApiException) as info:
        call()  # type: ignore[operator]
    return info.value.status_code


def test_a_key_of_one_account_is_not_found_in_another(
    emulator: Emulator, ibm: IBMClients, other: tuple[IBMClients, str, str]
) -> None:
    clients, _, instance = other
    home = emulator.ibm_identity.key_protect_instance
    key = ibm.key_protect(home).create_key("root")
    mine = clients.key_protect(instance)
    assert mine.list_keys() == []
    own = mine.create_key("root")  # the same name in its own instance
    assert own["id"] != key["id"] and own["crn"].split(":")[6] != key["crn"].split(":")[6]
    assert status_of(lambda: mine.get_key(key["id"])) == 404
    # the other account's instance does not exist for this account
    assert status_of(lambda: clients.key_protect(home).get_key(key["id"])) == 401
    assert [k["name"] for k in ibm.key_protect(home).list_keys()] == ["root"]


def test_iam_vpc_and_softlayer_state_is_per_account(
    emulator: Emulator, ibm: IBMClients, other: tuple[IBMClients, str, str]
) -> None:
    clients, account_id, _ = other
    home_account = emulator.ibm_identity.account_id
    ibm.identity().create_service_id(account_id=home_account, name="importer")
    assert clients.identity().list_service_ids().get_result()["serviceids"] == []
    assert status_of(lambda: clients.policies().list_policies(account_id=home_account)) == 403
    assert clients.policies().list_policies(account_id=account_id).get_result()["policies"]

    vpc = ibm.vpc().create_vpc(name="home-vpc").get_result()
    assert clients.vpc().list_vpcs().get_result()["vpcs"] == []
    assert status_of(lambda: clients.vpc().get_vpc(vpc["id"])) == 404
    assert f":a/{home_account}::vpc:" in vpc["crn"]

    order = seed_order(ibm.softlayer())
    guest = ibm.softlayer().call("Virtual_Guest", "createObject", order)
    assert clients.softlayer().call("SoftLayer_Account", "getVirtualGuests") == []
    with pytest.raises(SoftLayer.SoftLayerAPIError, match="SoftLayer_Virtual_Guest"):
        clients.softlayer().call("Virtual_Guest", "getObject", id=guest["id"])


def test_cos_buckets_are_owned_per_account_with_global_names(
    ibm: IBMClients, other: tuple[IBMClients, str, str]
) -> None:
    clients = other[0]
    ibm.cos().create_bucket(Bucket="home-bucket")
    clients.cos().create_bucket(Bucket="other-bucket")
    assert [b["Name"] for b in ibm.cos().list_buckets()["Buckets"]] == ["home-bucket"]
    assert [b["Name"] for b in clients.cos().list_buckets()["Buckets"]] == ["other-bucket"]
    with pytest.raises(ClientError) as taken:  # one namespace for every account, as IBM's
        clients.cos().create_bucket(Bucket="home-bucket")
    assert taken.value.response["Error"]["Code"] == "BucketAlreadyExists"


def test_a_regional_host_reaches_that_regions_instances(
    emulator: Emulator, ibm: IBMClients
) -> None:
    home = emulator.ibm_identity.key_protect_instance
    ibm.key_protect(home).create_key("root")
    token = ibm.authenticator.token_manager.get_token()
    url = emulator.base_url + "/api/v2/keys"
    headers = {"authorization": f"Bearer {token}", "bluemix-instance": home}
    verify = str(emulator.ca_path)
    found = requests.get(
        url, headers={**headers, "host": "us-south.kms.cloud.ibm.com"}, verify=verify, timeout=10
    )
    assert found.status_code == 200 and found.json()["metadata"]["collectionTotal"] == 1
    elsewhere = requests.get(
        url, headers={**headers, "host": "eu-de.kms.cloud.ibm.com"}, verify=verify, timeout=10
    )
    assert elsewhere.status_code == 401
    assert elsewhere.json()["resources"][0]["reasons"][0]["code"] == "UNAUTHORIZED_ERR"


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("eu-de.kms.cloud.ibm.com", "eu-de"),
        ("us-south.iaas.cloud.ibm.com", "us-south"),
        ("127.0.0.1:8443", "us-south"),
        ("iam.cloud.ibm.com", "us-south"),
    ],
)
def test_region_of_a_host(host: str, region: str) -> None:
    request = Request("GET", "/", {}, {"host": host}, b"", 443)
    assert region_of(request, "us-south") == region
