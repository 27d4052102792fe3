"""COS through ibm_boto3 (HMAC) against moto's S3, served by the emulator's application."""

from __future__ import annotations

import os

from clients.ibm import IBMClients
from emulator.cos import regional_location
from emulator.server import Emulator


def test_regional_bucket_and_multipart_upload(emulator: Emulator, ibm: IBMClients) -> None:
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket="byok-images", CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    s3.create_bucket(
        Bucket="byok-cross", CreateBucketConfiguration={"LocationConstraint": "us-standard"}
    )
    location = s3.get_bucket_location(Bucket="byok-images")["LocationConstraint"]
    assert regional_location(location, "us-south")
    assert not regional_location(emulator.cos.location("byok-cross"), "us-south")

    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    upload = s3.create_multipart_upload(Bucket="byok-images", Key="image.vhd")
    etags = [
        s3.upload_part(
            Bucket="byok-images", Key="image.vhd", UploadId=upload["UploadId"],
            PartNumber=n, Body=body,
        )["ETag"]
        for n, body in enumerate(parts, 1)
    ]  # fmt: skip
    s3.complete_multipart_upload(
        Bucket="byok-images",
        Key="image.vhd",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
    )
    assert s3.get_object(Bucket="byok-images", Key="image.vhd")["Body"].read() == b"".join(parts)
    assert s3.list_multipart_uploads(Bucket="byok-images").get("Uploads", []) == []


def test_reset_forgets_buckets(emulator: Emulator, ibm: IBMClients) -> None:
    ibm.cos().create_bucket(Bucket="byok-temp")
    emulator.reset()
    assert ibm.cos().list_buckets()["Buckets"] == []
