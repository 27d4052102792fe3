"""No blind re-sends, per IBM SDK: a write whose answer is lost after it happened (`reset-after`:
the connection dropped; `status-after`: a 504 instead of the answer) is not re-sent by
ibm-cloud-sdk-core, SoftLayer or ibm-cos (boto3), and `create_once` finds what it made: one
resource each time. Answers certainly not served (429) are still retried."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
import requests
from ibm_botocore.exceptions import ClientError, ConnectionClosedError
from ibm_cloud_sdk_core import ApiException
from SoftLayer import SoftLayerAPIError

from blocks.ibm import IBMCloudCredentials
from byok.ibm_cos_io import upload_stream
from byok.ibm_writes import answer_lost, create_once
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.server import Emulator

BUCKET = "byok-policy"
GUESTS = "SoftLayer_Virtual_Guest"
LOST = [
    pytest.param(Fault("reset-after", method="POST"), id="reset-after"),
    pytest.param(Fault("status-after", method="POST", status=504), id="status-after-504"),
]


def lose(emulator: Emulator, fault: Fault, path: str, count: int | None = 1) -> Fault:
    """Arm a copy of `fault` for the writes to `path`."""
    return emulator.faults.add(
        Fault(fault.kind, method=fault.method, path=path, status=fault.status, count=count)
    )


def order(hostname: str) -> dict[str, Any]:
    return {
        "hostname": hostname,
        "domain": "example.com",
        "startCpus": 1,
        "maxMemory": 1024,
        "hourlyBillingFlag": True,
        "localDiskFlag": False,
        "datacenter": {"name": "dal10"},
        "operatingSystemReferenceCode": "UBUNTU_22_64",
    }


@pytest.mark.parametrize("fault", LOST)
def test_ibm_cloud_sdk_core_does_not_resend_a_lost_create(
    emulator: Emulator, ibm: IBMClients, fault: Fault
) -> None:
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    armed = lose(emulator, fault, r"^/api/v2/keys$")
    with pytest.raises((requests.ConnectionError, ApiException)) as lost:
        kp.create_key("policy-root")
    assert answer_lost(lost.value) and armed.fired == 1
    assert [k["name"] for k in kp.list_keys()] == ["policy-root"]
    # the task's way: the lost answer is followed by a lookup, not a second create
    lose(emulator, fault, r"^/api/v2/keys$")
    found = create_once(
        lambda: kp.create_key("policy-root-2"),
        lambda: next((k for k in kp.list_keys() if k["name"] == "policy-root-2"), None),
        "root key",
    )
    assert found["name"] == "policy-root-2"
    assert sorted(k["name"] for k in kp.list_keys()) == ["policy-root", "policy-root-2"]


@pytest.mark.parametrize("fault", LOST)
def test_softlayer_does_not_resend_a_lost_order(
    emulator: Emulator, ibm: IBMClients, fault: Fault
) -> None:
    client = ibm.softlayer()
    armed = lose(emulator, fault, r"Virtual_Guest/createObject")
    with pytest.raises(SoftLayerAPIError) as lost:
        client.call(GUESTS, "createObject", order("lost1"))
    assert answer_lost(lost.value) and armed.fired == 1
    assert emulator.state is not None
    assert [g.order["hostname"] for g in emulator.state.softlayer.guests.values()] == ["lost1"]


def test_softlayer_retries_a_throttled_write(emulator: Emulator, ibm: IBMClients) -> None:
    throttle = emulator.faults.add(
        Fault("status", method="POST", path=r"createObject", status=429, retry_after=0, count=2)
    )
    ibm.softlayer().call(GUESTS, "createObject", order("throttled"))
    assert throttle.fired == 2 and emulator.state is not None
    assert len(emulator.state.softlayer.guests) == 1


@pytest.mark.parametrize("fault", LOST)
def test_iam_identity_does_not_resend_a_lost_create(
    emulator: Emulator, ibm: IBMClients, ibm_credentials: IBMCloudCredentials, fault: Fault
) -> None:
    identity = ibm.identity()
    account = ibm_credentials.account_id
    lose(emulator, fault, r"^/v1/serviceids/?$")
    with pytest.raises((requests.ConnectionError, ApiException)):
        identity.create_service_id(account_id=account, name="policy-importer")
    assert emulator.state is not None
    assert [s.name for s in emulator.state.iam.service_ids.values()] == ["policy-importer"]


def test_ibm_cos_does_not_resend_a_lost_multipart_start(
    emulator: Emulator, ibm: IBMClients
) -> None:
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    armed = lose(emulator, Fault("reset-after", method="POST"), rf"^/{BUCKET}/lost\.vhd$")
    with pytest.raises((ConnectionClosedError, ClientError)) as lost:
        s3.create_multipart_upload(Bucket=BUCKET, Key="lost.vhd")
    assert answer_lost(lost.value) and armed.fired == 1
    assert len(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == 1


@pytest.mark.parametrize("fault", LOST)
def test_ibm_cos_upload_rides_through_lost_posts(
    emulator: Emulator, ibm: IBMClients, fault: Fault
) -> None:
    """Both POSTs of a multipart upload (start and complete) lose their answer once: one
    object, no upload left behind."""
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    data = os.urandom(11 << 20)
    armed = lose(emulator, fault, rf"^/{BUCKET}/image\.vhd$", count=2)
    stored = upload_stream(
        s3,
        io.BytesIO(data),
        BUCKET,
        "image.vhd",
        threshold=5 << 20,
        part_size=5 << 20,
        metadata={"byok-keyhash": "00"},
    )
    assert armed.fired == 2 and (stored.size, stored.parts) == (len(data), 3)
    assert s3.get_object(Bucket=BUCKET, Key="image.vhd")["Body"].read() == data
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
