"""The inventory and blast-radius flows on an IBM Cloud account of the emulator, through the
real IBM SDKs: root keys, encrypted images in COS (current and stale wrapped DEKs, a foreign
root key), image templates and a VPC image, what the credentials cannot read, and the paths
from a root key to what it protects."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from pydantic import ValidationError

from byok.errors import InvalidRequest
from byok.ibm_dek import META_KEY_VERSION, META_KEYHASH, META_ROOT_KEY, META_WDEK
from byok.inventory.request import (
    BlastRadiusRequest,
    IbmAccountScope,
    InventoryRequest,
    ReportBucket,
)
from clients.ibm import IBMClients
from console.cli import main
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.softlayer.models import SEED_TEMPLATE_ID, Template
from emulator.services.vpc.models import Image
from flows.blast_radius import key_blast_radius
from flows.inventory import inventory_customer_managed_keys
from tests.helpers import outcomes, run_with_tables

BUCKET = "byok-images"
MISSING_INSTANCE = "00000000-0000-4000-8000-00000000dead"


def _put_image(s3: Any, key: str, crn: str, wrapped: dict[str, Any]) -> None:
    s3.put_object(
        Bucket=BUCKET,
        Key=key,
        Body=b"not really a VHD",
        Metadata={
            META_KEYHASH: "00" * 32,
            META_ROOT_KEY: crn,
            META_WDEK: wrapped["ciphertext"],
            META_KEY_VERSION: wrapped["keyVersion"]["id"],
        },
    )


@pytest.fixture
def account(emulator: Emulator, ibm_block: str, ibm: IBMClients) -> dict[str, Any]:
    """A root key rotated once; in COS an image wrapped by its current version ('current'),
    one by the previous ('stale') and one naming a root key of another account; encrypted
    templates with and without their object; a VPC image registered with the key."""
    assert emulator.state is not None
    identity = emulator.ibm_identity
    kp = ibm.key_protect(identity.key_protect_instance)
    root = kp.create_key("inventory-root")
    dek = base64.b64encode(os.urandom(32)).decode()
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    _put_image(s3, "stale.vhd", root["crn"], kp.wrap(root["id"], dek))
    vpc = emulator.state.vpc
    with vpc.lock:
        image = Image(
            **vpc._new("image", "images", "vpc-encrypted", vpc.images),
            body={
                "operating_system": {"name": next(iter(vpc.operating_systems))},
                "encryption_key": {"crn": root["crn"]},
            },
            status="available",
        )
        vpc.images[image.id] = image
    emulator.state.keyprotect.register(root["crn"], image.crn)
    kp.rotate(root["id"])
    _put_image(s3, "current.vhd", root["crn"], kp.wrap(root["id"], dek))
    foreign = root["crn"].replace(identity.account_id, "0123456789abcdef0123456789abcdef")
    foreign = foreign.replace(root["id"], "11111111-2222-4333-8444-555555555555")
    _put_image(s3, "foreign.vhd", foreign, kp.wrap(root["id"], dek))
    softlayer = emulator.state.softlayer
    with softlayer.lock:
        for template_id, name in ((9001, "current"), (9003, "orphan")):
            softlayer.templates[template_id] = Template(
                template_id, name, "", "UBUNTU_22_64", encrypted=True
            )
    return {
        "crn": root["crn"],
        "id": root["id"],
        "version": kp.get_key(root["id"])["keyVersion"]["id"],
        "vpc_image": image.crn,
        "scope": IbmAccountScope(
            ibm_credentials_block=ibm_block,
            key_protect_instances=[identity.key_protect_instance, MISSING_INSTANCE],
            buckets=[BUCKET, "no-such-bucket"],
        ),
    }


def test_ibm_account_rows_and_the_dek_control_reported_to_a_bucket(
    emulator: Emulator, account: dict[str, Any], ibm: IBMClients, ibm_block: str
) -> None:
    kp = ibm.key_protect(emulator.ibm_identity.key_protect_instance)
    kept = kp.create_key("rotated-quarterly")
    kp.set_rotation_policy(kept["id"], 3)
    destination = ReportBucket(ibm_credentials_block=ibm_block, bucket=BUCKET, prefix="reports/")
    result, tables = run_with_tables(
        inventory_customer_managed_keys,
        InventoryRequest(ibm_accounts=[account["scope"]], report_bucket=destination),
    )
    s3 = ibm.cos()
    text = s3.get_object(Bucket=BUCKET, Key="reports/inventory.json")["Body"].read()
    found = {(r["resource_id"], r["control"]): r for r in json.loads(text)}
    written = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="reports/")["Contents"]}
    assert {"reports/inventory.csv", "reports/inventory-oscal.json"} < written
    assert len(written) == 4  # and one history object; the write probe is gone
    assert result.files[0] == "cos://us-south/byok-images/reports/inventory.csv"

    def verdict(resource: str, control: str) -> tuple[str, str]:
        row = found[(resource, control)]
        return row["verdict"], row["rule"]

    cos = "cos://us-south/byok-images"
    assert verdict(account["crn"], "key-age") == ("compliant", "key version is 0 days old")
    assert found[(account["crn"], "key-age")]["key_version"] == account["version"]
    # Key Protect rotation policies: none, and every 3 months (90 days, the default limit).
    assert verdict(account["crn"], "rotation-policy") == (
        "non-compliant",
        "no rotation policy with a Rotate action",
    )
    assert verdict(kept["crn"], "rotation-policy") == (
        "compliant",
        "rotation policy rotates the key",
    )
    assert found[(kept["crn"], "rotation-policy")]["rotate_after_days"] == 90
    # Neither root key was given an expiration date.
    assert verdict(account["crn"], "key-expiry") == (
        "non-compliant",
        "the key has no expiration date",
    )
    assert verdict(f"{cos}/current.vhd", "ibm-dek-current")[0] == "compliant"
    state, rule = verdict(f"{cos}/stale.vhd", "ibm-dek-current")
    assert state == "non-compliant" and "rewrap" in rule and account["version"] in rule
    state, rule = verdict(f"{cos}/foreign.vhd", "ibm-dek-current")
    assert state == "non-compliant" and "is not a root key of account" in rule
    # Templates: linked through the object named after them, or not at all.
    assert verdict("softlayer:image-template:9001", "ibm-dek-current")[0] == "compliant"
    state, rule = verdict("softlayer:image-template:9003", "ibm-dek-current")
    assert state == "non-compliant" and "orphan.vhd" in rule
    seed = f"softlayer:image-template:{SEED_TEMPLATE_ID}"
    assert verdict(seed, "customer-key")[0] == "non-compliant"
    assert verdict(seed, "ibm-dek-current")[0] == "not-applicable"
    # The VPC image's registration followed the rotation (VPC rewraps).
    assert verdict(account["vpc_image"], "ibm-dek-current")[0] == "compliant"
    # What could not be read is a row each, and the rest of the report is there.
    assert found[(f"key-protect:{MISSING_INSTANCE}", "inventory-access")]["verdict"] == "no-access"
    assert found[("cos://us-south/no-such-bucket", "inventory-access")]["verdict"] == "no-access"
    assert result.no_access == 2 and result.non_compliant == 7
    assert result.resources == 2 + 3 + 3 + 1  # root keys, objects, templates, VPC image
    assert emulator.requests.find("POST", "ResourceGraph") == []  # no Azure asked for
    summary = tables["inventory-customer-managed-keys-summary"]
    assert outcomes(summary) == [
        ("Check the report bucket", "verified"),
        ("Read the IBM Cloud account", "read"),
        ("Write the report files", "uploaded"),
        ("Publish the report", "published"),
        ("Announce what needs action", "emitted"),
    ]
    assert summary[1]["outcome"] == (
        "read (2 root keys, 3 images in COS, 3 image templates, 1 VPC image, not readable: "
        f"key-protect:{MISSING_INSTANCE}, cos://us-south/no-such-bucket)"
    )
    assert summary[2]["resource"] == f"cos bucket {BUCKET}/reports/"


def test_blast_radius_of_a_root_key(
    account: dict[str, Any], emulator: Emulator, ibm_block: str, capsys: pytest.CaptureFixture
) -> None:
    result, tables = run_with_tables(
        key_blast_radius, BlastRadiusRequest(key_id=account["crn"], ibm_accounts=[account["scope"]])
    )
    assert outcomes(tables["key-blast-radius-summary"]) == [
        ("Read the IBM Cloud account", "read"),
        ("Find the key's dependents", "found"),
    ]
    cos = "cos://us-south/byok-images"
    paths = sorted(d.path for d in result.dependents)
    assert paths == sorted(
        [
            [account["crn"], f"{cos}/current.vhd"],
            [account["crn"], f"{cos}/stale.vhd"],
            [account["crn"], f"{cos}/current.vhd", "softlayer:image-template:9001"],
            [account["crn"], account["vpc_image"]],
        ]
    )
    # `byok blast-radius` with the key's id prints the same paths, one a line.
    instance = emulator.ibm_identity.key_protect_instance
    argv = ["blast-radius", account["id"], "--ibm-block", ibm_block]
    argv += ["--key-protect-instance", instance, "--bucket", BUCKET]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == sorted(" -> ".join(p) for p in paths)
    assert main(["blast-radius", "kv/k", "--ibm-block", ibm_block]) == 2
    assert "key_id = 'kv/k': must be a Key Vault key id" in capsys.readouterr().err


def test_bad_input_is_refused_before_any_read(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    ibm.cos().create_bucket(
        Bucket="read-only", CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    # A bucket these credentials may read but not write to (COS answers 403 AccessDenied).
    emulator.faults.add(
        Fault("status", method="PUT", path="read-only/", status=403, code="AccessDenied")
    )
    emulator.requests.clear()
    for bucket, rule in (
        ("absent", "no such bucket"),
        ("read-only", f"the credentials of '{ibm_block}' cannot write to it \\(AccessDenied\\)"),
    ):
        with pytest.raises(InvalidRequest, match=f"report_bucket.bucket = '{bucket}': {rule}"):
            inventory_customer_managed_keys(
                InventoryRequest(
                    ibm_accounts=[IbmAccountScope(ibm_credentials_block=ibm_block)],
                    report_bucket=ReportBucket(ibm_credentials_block=ibm_block, bucket=bucket),
                )
            )
    assert emulator.requests.find(None, "/rest/|/api/v2/keys") == []  # nothing read
    with pytest.raises(ValidationError, match=r"'absent': give it or report_dir, not both"):
        InventoryRequest(
            ibm_accounts=[IbmAccountScope(ibm_credentials_block=ibm_block)],
            report_dir="/tmp",
            report_bucket=ReportBucket(ibm_credentials_block=ibm_block, bucket="absent"),
        )
    with pytest.raises(ValidationError, match=r"key_id = 'kv/k': must be a Key Vault key id"):
        BlastRadiusRequest.model_validate({"key_id": "kv/k", "azure_credentials_block": "a"})
    with pytest.raises(ValidationError, match=r"ibm_accounts = \[\]: a Key Protect key"):
        BlastRadiusRequest.model_validate(
            {"key_id": MISSING_INSTANCE, "azure_credentials_block": "a"}
        )
    with pytest.raises(ValidationError, match=r"key_protect_instances\[0\] = 'x': instance ids"):
        IbmAccountScope(ibm_credentials_block=ibm_block, key_protect_instances=["x"])
    with pytest.raises(ValidationError, match=r"azure_credentials_block = None: give it"):
        InventoryRequest.model_validate({})
