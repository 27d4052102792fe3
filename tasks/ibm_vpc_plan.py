"""The plan of provision-encrypted-vpc-image: what each step would do, from reads only."""

from __future__ import annotations

from prefect import task

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import export_key, kms_authorization, object_uri, policy_name
from byok.ibm_vpc import (
    ENCRYPTED_FILE,
    IMAGE_SERVICE,
    PASSPHRASE,
    PASSPHRASE_BYTES,
    READY,
    WAIT_STEP,
    VpcImageRequest,
    VpcPlan,
    image_cos_authorization,
    vpc_resource,
)
from clients.ibm import IBMClients
from clients.ibm_cos_objects import bucket_location, head
from clients.ibm_policies import find_policy
from clients.ibm_vpc_resources import find_instance, find_subnet, find_vpc
from clients.key_protect_keys import find_root_key
from tasks.ibm_cos import ensure_bucket
from tasks.ibm_iam import ensure_kms_authorization
from tasks.ibm_image_source import prepare_source
from tasks.ibm_key_protect import ensure_root_key
from tasks.ibm_vpc import (
    create_vpc_instance,
    encrypt_image,
    ensure_image_cos_authorization,
    ensure_vpc_network,
    fetch_source,
    import_vpc_image,
    prepare_passphrase,
    upload_encrypted_image,
    verify_image,
)
from tasks.outcomes import planned, report
from tasks.retry import STEP_RETRIES


@task(name="Plan the VPC image", **STEP_RETRIES)
def plan_vpc_image(
    credentials: IBMCloudCredentials, request: VpcImageRequest, found: VpcPlan
) -> None:
    """What each step of provision-encrypted-vpc-image would do, given what the validation
    `found` (a local source, an image of that name): the root key, the authorizations, the
    bucket, then, without an image, the passphrase, the source, its encryption, the upload
    and the import (an image is never re-encrypted), and the instance with its network."""
    clients = IBMClients.of(credentials)
    region, account, bucket = credentials.region, credentials.account_id, request.bucket
    kp_instance, cos = request.key_protect_instance_id, request.cos_instance_id
    key = find_root_key(clients.key_protect(kp_instance), request.root_key)
    imported = "imported material" if request.root_key_material_block else ""
    name = f"root key {key['name'] if key else request.root_key}"
    planned(ensure_root_key, name, None if key else "create", key["crn"] if key else imported)
    for grant, subject_name, (subject, scope) in (
        (ensure_kms_authorization, "server-protect", kms_authorization(account, kp_instance)),
        (ensure_image_cos_authorization, IMAGE_SERVICE, image_cos_authorization(account, cos)),
    ):
        policy = find_policy(clients, "authorization", subject, scope, {})
        note = f"policy {policy}" if policy else ""
        planned(grant, policy_name(subject_name, scope), None if policy else "grant", note)
    location = bucket_location(clients.cos(cos), bucket) or ""
    new_location = f"{region}-{request.bucket_storage_class}"
    planned(ensure_bucket, object_uri(region, bucket, ""), None if location else "create",
            location or new_location)  # fmt: skip
    if found.image is None:
        _plan_encryption(credentials, request, found, location)
    else:
        image = found.image
        report(
            vpc_resource("image", image["name"]),
            "verify" if image["status"] == READY["image"] else "wait for",
            step=WAIT_STEP.format(kind="image"),
            note=f"{image['status']}, id {image['id']}: not re-encrypted",
            planned=True,
        )
    if request.instance is not None:
        spec = request.instance
        for step, kind, name, there in (
            (ensure_vpc_network, "network", spec.vpc_name, find_vpc(clients, spec.vpc_name)),
            (ensure_vpc_network, "subnet", spec.subnet_name,
             find_subnet(clients, spec.subnet_name)),
            (create_vpc_instance, "instance", spec.name, find_instance(clients, spec.name)),
        ):  # fmt: skip
            planned(step, vpc_resource(kind, name), None if there else "create",
                    f"id {there['id']}" if there else "")  # fmt: skip


def _plan_encryption(
    credentials: IBMCloudCredentials, request: VpcImageRequest, found: VpcPlan, location: str
) -> None:
    """The passphrase, the source (exported, downloaded), its encryption and check, the
    upload and the import: the steps of a run that finds no image of the name."""
    region, bucket = credentials.region, request.bucket
    s3 = IBMClients.of(credentials).cos(request.cos_instance_id)
    block = request.passphrase_block
    made = f"Secret block {block}" if block else f"{PASSPHRASE_BYTES} random bytes"
    planned(prepare_passphrase, PASSPHRASE, "wrap" if block else "generate", made)
    source = request.source_object
    if request.source_template_id is not None:
        source = export_key(request.image_name)[1]
        there = location and head(s3, bucket, source) is not None
        note = f"template {request.source_template_id}"
        planned(prepare_source, object_uri(region, bucket, source), None if there else "export",
                note)  # fmt: skip
    if source is not None:
        planned(fetch_source, object_uri(region, bucket, source), "download")
    kind = f"from the {found.source.format} source" if found.source else ""
    planned(encrypt_image, ENCRYPTED_FILE, "encrypt", kind)
    planned(verify_image, ENCRYPTED_FILE, "verify")
    uri = object_uri(region, bucket, request.object_key)
    replaced = location and head(s3, bucket, request.object_key) is not None
    planned(upload_encrypted_image, uri, "upload", "replaces the object" if replaced else "")
    image = vpc_resource("image", request.image_name)
    planned(import_vpc_image, image, "import", f"from {uri}")
