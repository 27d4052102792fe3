"""The unencrypted source image: an image template exported to COS with copyToIcos (once), a
VHD object already in the bucket, or a local VHD file; checked to be an importable VHD."""

from __future__ import annotations

import SoftLayer
from prefect import get_run_logger, task

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import SourceInfo, export_key, object_uri
from byok.ibm_validation import check_source_vhd, local_vhd_info
from byok.ibm_writes import create_once
from byok.validation import InvalidRequest
from clients.ibm import IBMClients
from clients.ibm_cos_objects import head, read_vhd_info
from clients.softlayer_templates import TEMPLATES, get_template, wait_for_template
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


def exporting(client: SoftLayer.BaseClient, template_id: int) -> bool | None:
    """True when the template has a transaction (the export a lost answer started)."""
    return get_template(client, template_id).busy or None


@task(name="Export or locate the unencrypted image in COS", **STEP_RETRIES)
def prepare_source(
    credentials: IBMCloudCredentials,
    cos_instance_id: str,
    bucket: str,
    template_id: int | None,
    source_object: str | None,
    image_name: str,
    timeout: float,
    interval: float,
    source_file: str | None = None,
) -> SourceInfo:
    """With a template: copyToIcos into `exports/` (skipped when the export is there) and
    wait for it; with an object or a local file: use it. Either way it must be a VHD of at
    most 100 GB."""
    if source_file is not None:
        size, info = local_vhd_info("source_file", source_file)
        check_source_vhd("source_file", source_file, info)
        report(source_file, "verify", note=f"a VHD of {size} bytes")
        return SourceInfo(bucket="", key="", size=size, exported=False, file=source_file)
    s3 = IBMClients.of(credentials).cos(cos_instance_id)
    field, key, exported = "source_object", source_object or "", False
    if template_id is not None:
        client = IBMClients.of(credentials).softlayer()
        field, (target, key) = "source_template_id", export_key(image_name)
        template = get_template(client, template_id)
        if template.busy or head(s3, bucket, key) is None:
            if not template.busy:
                uri = f"cos://{credentials.region}/{bucket}/{target}"
                create_once(
                    lambda: client.call(
                        TEMPLATES,
                        "copyToIcos",
                        {"uri": uri, "ibmApiKey": credentials.api_key.get_secret_value()},
                        id=template_id,
                    ),
                    lambda: exporting(client, template_id) or head(s3, bucket, key),
                    f"the export of template {template_id}",
                )
                get_run_logger().info("Exporting template %s to %s", template_id, uri)
            wait_for_template(client, template_id, timeout, interval)
            exported = True
    found = head(s3, bucket, key)
    if found is None:
        raise InvalidRequest(field, key, f"no such object in bucket {bucket}")
    size = int(found["ContentLength"])
    check_source_vhd(field, key, read_vhd_info(s3, bucket, key, size, field))
    uri = object_uri(credentials.region, bucket, key)
    if template_id is None:
        report(uri, "verify", note=f"a VHD of {size} bytes")
    else:
        report(uri, "export" if exported else None, note=f"template {template_id}, {size} bytes")
    return SourceInfo(bucket=bucket, key=key, size=size, exported=template_id is not None)
