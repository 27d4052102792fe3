"""COS step: the regional bucket (the reads of buckets and objects the IBM steps share are
in clients.ibm_cos_objects)."""

from __future__ import annotations

from ibm_botocore.exceptions import ClientError
from prefect import task

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import object_uri
from byok.ibm_validation import check_bucket_location
from clients.ibm import IBMClients
from clients.ibm_cos_objects import bucket_location
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


@task(name="Ensure the regional COS bucket", **STEP_RETRIES)
def ensure_bucket(
    credentials: IBMCloudCredentials, cos_instance_id: str, bucket: str, storage_class: str
) -> str:
    """The bucket, created regional in the Key Protect region if missing (an existing one
    must be regional there); returns its location constraint."""
    s3 = IBMClients.of(credentials).cos(cos_instance_id)
    location = bucket_location(s3, bucket)
    created = location == ""
    if created:
        location = f"{credentials.region}-{storage_class}"
        try:
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location}
            )
        except ClientError as exc:  # a re-sent PUT whose first answer was lost
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
            location = bucket_location(s3, bucket)
    check_bucket_location("bucket", bucket, location, credentials.region)
    uri, location = object_uri(credentials.region, bucket, ""), str(location)
    report(uri, "create" if created else None, note=location)
    return location
