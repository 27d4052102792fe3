"""Key Protect through ibm-cloud-sdk-core: keys, wrap/unwrap/rewrap/rotate, access, retries."""

from __future__ import annotations

import base64
import os

import pytest
from ibm_cloud_sdk_core import ApiException
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from clients.ibm import IBMClients, KeyProtectClient
from emulator.faults import Fault
from emulator.server import Emulator


@pytest.fixture
def kp(emulator: Emulator, ibm: IBMClients) -> KeyProtectClient:
    """Key Protect on the seeded instance."""
    return ibm.key_protect(emulator.ibm_identity.key_protect_instance)


def b64(data: bytes) -> str:
    """Base64 text."""
    return base64.b64encode(data).decode()


def test_create_import_get_and_list_keys(emulator: Emulator, kp: KeyProtectClient) -> None:
    root = kp.create_key("root", description="wraps image DEKs")
    standard = kp.create_key("standard", extractable=True)
    imported = kp.create_key("imported-root", payload=b64(os.urandom(32)))

    instance = emulator.ibm_identity.key_protect_instance
    assert root["crn"].endswith(f":{instance}:key:{root['id']}")
    assert root["extractable"] is False and imported["imported"] is True
    assert "payload" not in kp.get_key(root["id"])
    assert len(base64.b64decode(kp.get_key(standard["id"])["payload"])) == 32
    assert kp.get_key("root")["id"] == root["id"]  # by name too
    assert {k["name"] for k in kp.list_keys()} == {"root", "standard", "imported-root"}


def test_wrap_unwrap_rotate_rewrap(kp: KeyProtectClient) -> None:
    key = kp.create_key("root")
    dek = os.urandom(64)
    wrapped = kp.wrap(key["id"], b64(dek))
    assert wrapped["keyVersion"]["id"] == key["keyVersion"]["id"]
    assert base64.b64decode(kp.unwrap(key["id"], wrapped["ciphertext"])["plaintext"]) == dek
    assert "ciphertext" not in kp.unwrap(key["id"], wrapped["ciphertext"])

    kp.rotate(key["id"])
    latest = kp.get_key(key["id"])["keyVersion"]["id"]
    assert latest != key["keyVersion"]["id"]
    unwrapped = kp.unwrap(key["id"], wrapped["ciphertext"])
    assert base64.b64decode(unwrapped["plaintext"]) == dek
    assert unwrapped["rewrappedKeyVersion"]["id"] == latest
    rewrapped = kp.rewrap(key["id"], wrapped["ciphertext"])
    assert rewrapped["rewrappedKeyVersion"]["id"] == latest
    assert base64.b64decode(kp.unwrap(key["id"], rewrapped["ciphertext"])["plaintext"]) == dek


def test_one_rotation_per_hour_per_key(emulator: Emulator, kp: KeyProtectClient) -> None:
    key, other = kp.create_key("root"), kp.create_key("other-root")
    kp.rotate(key["id"])
    kp.rotate(other["id"])  # the limit is per key
    versions = [kp.get_key(key["id"])["keyVersion"]["id"]]
    clock = emulator.state.keyprotect.clock  # type: ignore[union-attr]
    clock.advance(3599)
    with pytest.raises(ApiException) as refused:
        kp.rotate(key["id"])
    assert refused.value.status_code == 409
    (reason,) = refused.value.http_response.json()["resources"][0]["reasons"]
    assert reason["code"] == "KEY_ROTATION_NOT_PERMITTED"
    assert "Only one 'rotate' action per hour is permitted" in reason["message"]
    assert kp.get_key(key["id"])["keyVersion"]["id"] == versions[0]  # not rotated again
    clock.advance(1)
    kp.rotate(key["id"])
    assert kp.get_key(key["id"])["lastRotateDate"] > key["creationDate"]


def test_wrap_without_plaintext_generates_a_dek(kp: KeyProtectClient) -> None:
    key = kp.create_key("root")
    wrapped = kp.wrap(key["id"])
    dek = base64.b64decode(wrapped["plaintext"])
    assert len(dek) == 32
    assert base64.b64decode(kp.unwrap(key["id"], wrapped["ciphertext"])["plaintext"]) == dek


def test_standard_key_cannot_wrap_and_bad_input_is_named(kp: KeyProtectClient) -> None:
    standard = kp.create_key("standard", extractable=True)
    with pytest.raises(ApiException) as caught:
        kp.wrap(standard["id"], b64(os.urandom(32)))
    assert caught.value.status_code == 422 and "standard key" in caught.value.message
    root = kp.create_key("root")
    with pytest.raises(ApiException) as bad:
        kp.wrap(root["id"], "not base64!")
    assert bad.value.status_code == 400 and "plaintext" in bad.value.message
    with pytest.raises(ApiException) as short:
        kp.create_key("short", payload=b64(os.urandom(20)))
    assert short.value.status_code == 400 and "16, 24 or 32 bytes" in short.value.message


def test_unknown_instance(emulator: Emulator, ibm: IBMClients) -> None:
    with pytest.raises(ApiException) as unknown:
        ibm.key_protect("00000000-0000-4000-8000-000000000000").list_keys()
    assert unknown.value.status_code == 401
    with pytest.raises(ApiException) as malformed:
        ibm.key_protect("not-a-guid").list_keys()
    assert malformed.value.status_code == 400 and "Bluemix-Instance" in malformed.value.message


def test_caller_without_access_policy_gets_403(
    emulator: Emulator,
    kp: KeyProtectClient,
    ibm_credentials: IBMCloudCredentials,
    ibm_service_id: tuple[str, str],
    ibm_grant,
) -> None:
    key = kp.create_key("root")
    iam_id, api_key = ibm_service_id
    instance = emulator.ibm_identity.key_protect_instance
    other = IBMClients(ibm_credentials.model_copy(update={"api_key": SecretStr(api_key)}))
    with pytest.raises(ApiException) as caught:
        other.key_protect(instance).wrap(key["id"])
    assert caught.value.status_code == 403 and iam_id in caught.value.message

    ibm_grant(iam_id, "kms", "Reader", serviceInstance=instance)
    assert other.key_protect(instance).wrap(key["id"])["ciphertext"]
    with pytest.raises(ApiException) as reader:
        other.key_protect(instance).rotate(key["id"])  # Reader may not rotate
    assert reader.value.status_code == 403


def test_429_is_retried(emulator: Emulator, kp: KeyProtectClient) -> None:
    key = kp.create_key("root")
    emulator.faults.add(
        Fault(kind="status", status=429, retry_after=0, path="/actions/wrap", count=1)
    )
    assert kp.wrap(key["id"])["ciphertext"]
    statuses = [r.status for r in emulator.requests.find("POST", "/actions/wrap$")]
    assert statuses == [429, 200]


def test_disabled_root_key_refuses_crypto_until_enabled(kp: KeyProtectClient) -> None:
    """Disable (state 2, suspended): wrap, unwrap and rotate answer 422 KEY_INVALID_STATE_ERR;
    enable: the same ciphertext unwraps again. Disabling twice is refused."""
    key = kp.create_key("root")
    dek = os.urandom(32)
    wrapped = kp.wrap(key["id"], b64(dek))["ciphertext"]
    kp._call("POST", f"/api/v2/keys/{key['id']}/actions/disable")
    assert kp.get_key(key["id"])["state"] == 2
    for attempt in (
        lambda: kp.unwrap(key["id"], wrapped),
        lambda: kp.wrap(key["id"], b64(dek)),
        lambda: kp.rotate(key["id"]),
        lambda: kp._call("POST", f"/api/v2/keys/{key['id']}/actions/disable"),
    ):
        with pytest.raises(ApiException) as refused:
            attempt()
        assert refused.value.status_code == 422
        assert "KEY_INVALID_STATE_ERR" in str(refused.value.http_response.text)
    kp._call("POST", f"/api/v2/keys/{key['id']}/actions/enable")
    assert kp.get_key(key["id"])["state"] == 1
    assert base64.b64decode(kp.unwrap(key["id"], wrapped)["plaintext"]) == dek


def test_rotation_policies_of_root_keys(ibm: IBMClients, emulator: Emulator) -> None:
    """PUT/GET /keys/{id}/policies as IBM/keyprotect-go-client sends them: 1 to 12 months,
    root keys only, the last write wins."""
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    root = kp.create_key("root")
    assert kp.rotation_policy(root["id"]) is None
    kp.set_rotation_policy(root["id"], 6)
    kp.set_rotation_policy(root["id"], 2)
    assert kp.rotation_policy(root["id"]) == {"enabled": True, "interval_month": 2}
    for months in (0, 13):
        with pytest.raises(ApiException) as bad:
            kp.set_rotation_policy(root["id"], months)
        assert bad.value.status_code == 400 and "interval_month" in bad.value.message
    standard = kp.create_key("standard", extractable=True)
    with pytest.raises(ApiException) as refused:
        kp.set_rotation_policy(standard["id"], 1)
    assert refused.value.status_code == 422 and "root keys" in refused.value.message
