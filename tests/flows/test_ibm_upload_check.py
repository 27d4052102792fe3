"""The upload step checks what COS stored before the import may use it: an object that is
not the tap-style VHD carrying the DEK's keyhash is deleted and the step fails with a
VerificationFailed naming the object."""

from __future__ import annotations

import os
import re

import pytest

from blocks.ibm import IBMCloudCredentials
from byok.errors import VerificationFailed
from byok.ibm_dek import META_KEYHASH
from byok.ibm_pipe import BytePipe
from clients.ibm import IBMClients
from emulator.server import Emulator
from tasks.ibm_transfer import upload_image
from tests.flows.test_ibm_image import BUCKET, dynamic_vhd


def test_an_object_that_is_not_the_encrypted_image_is_deleted(
    emulator: Emulator, ibm_credentials: IBMCloudCredentials, ibm: IBMClients
) -> None:
    s3 = ibm.cos()
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    plain = dynamic_vhd(os.urandom(4096))  # a tap-style VHD, but without a keyhash
    pipe = BytePipe(capacity=len(plain))
    pipe.write(plain)
    pipe.finish()
    stored = f"{BUCKET}/wrong.vhd: COS stored a 'tap' dynamic VHD with keyhash None"
    with pytest.raises(VerificationFailed, match=f"^{re.escape(stored)}"):
        upload_image.fn(
            ibm_credentials,
            emulator.ibm_identity.cos_instance,
            pipe,
            BUCKET,
            "wrong.vhd",
            {META_KEYHASH: "00" * 20},
            threshold=1 << 30,
            part_size=8 << 20,
        )
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
