"""The VPC procedure: an image encrypted with LUKS under a passphrase wrapped by your Key
Protect root key, imported into IBM Cloud VPC, and optionally an instance from it; and the
rotation of that root key. Each run ends with its summary (what each step did); `plan_only`
validates, reads and says what each step would do, writing nothing."""

from __future__ import annotations

from prefect import flow

from blocks.ibm import IBMCloudCredentials
from byok.ibm_vpc import (
    ENCRYPTED_FILE,
    VpcImageRequest,
    VpcImageResult,
    VpcRotationRequest,
    VpcRotationResult,
    image_lock_id,
)
from byok.ibm_vpc_qemu import spool_image
from byok.outcomes import Plan
from byok.parameters import parse_request
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
    publish_vpc_image,
    upload_encrypted_image,
    validate_vpc_request,
    verify_image,
    wait_for_vpc,
)
from tasks.ibm_vpc_plan import plan_vpc_image
from tasks.ibm_vpc_rotation import (
    plan_vpc_rotation,
    publish_vpc_rotation,
    rotate_vpc_root_key,
    verify_vpc_rewrap,
)
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.run_lock import resource_lock

IMAGE_FLOW, ROTATION_FLOW = "provision-encrypted-vpc-image", "rotate-vpc-root-key"


@flow(name=IMAGE_FLOW, persist_result=False, validate_parameters=False)
@refuse_quietly
def provision_encrypted_vpc_image(
    request: VpcImageRequest, credentials: IBMCloudCredentials | None = None
) -> VpcImageResult | Plan:
    """Validate → root key → passphrase wrapped by it → authorizations (server-protect → kms,
    is → COS) → regional bucket → the source (a local file, a COS object, or a classic image
    template exported to the bucket), spooled when it is in COS → qcow2 + LUKS with qemu-img,
    checked against the source → upload → create_image, wait until available → optionally an
    instance, wait until running. An image already named so is reused (not re-encrypted).
    One run per image. `plan_only`: validate, then read what each step would do.

    Args:
        credentials: A saved 'BYOK IBM Cloud Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `ibm_credentials_block`.
    """
    request = parse_request(VpcImageRequest, request)
    credentials = IBMCloudCredentials.chosen(credentials, request.ibm_credentials_block)
    if request.plan_only:
        plan_vpc_image(credentials, request, validate_vpc_request(credentials, request))
        return publish_plan(IMAGE_FLOW)
    lock = image_lock_id(credentials.account_id, credentials.region, request.image_name)
    with resource_lock(lock, wait=request.wait_for_other_run):
        return provision(credentials, request)


def provision(credentials: IBMCloudCredentials, request: VpcImageRequest) -> VpcImageResult:
    """The steps, under the run's lock."""
    timeout, interval = request.timeout_minutes * 60, request.poll_seconds
    kp_instance, cos = request.key_protect_instance_id, request.cos_instance_id
    plan = validate_vpc_request(credentials, request)
    root = ensure_root_key(
        credentials, kp_instance, request.root_key, request.create_root_key,
        request.root_key_material_block,
    )  # fmt: skip
    created = ["root key"] if root.created else []
    policies = [
        ensure_kms_authorization(credentials, kp_instance),
        ensure_image_cos_authorization(credentials, cos),
    ]
    ensure_bucket(credentials, cos, request.bucket, request.bucket_storage_class)
    uri = f"cos://{credentials.region}/{request.bucket}/{request.object_key}"
    image, key_version = plan.image, None
    if image is None:
        passphrase = prepare_passphrase(credentials, kp_instance, root, request.passphrase_block)
        key_version = passphrase.key_version
        with spool_image(request.spool_dir) as spool:
            export = None
            if request.source_template_id is not None:  # exported as the classic procedure does
                export = prepare_source(
                    credentials, cos, request.bucket, request.source_template_id, None,
                    request.image_name, timeout, interval,
                )  # fmt: skip
            source = plan.source or fetch_source(credentials, request, spool, export)
            target = spool / ENCRYPTED_FILE
            encrypt_image(source, passphrase, target, request.luks_iter_time_ms)
            verify_image(source, passphrase, target)
            upload_encrypted_image(credentials, cos, target, request.bucket, request.object_key)
        image = import_vpc_image(credentials, request, uri, passphrase, root.crn)
        created += ["encrypted object", "image"]
    image = wait_for_vpc(credentials, "image", image["id"], timeout, interval)
    instance = None
    if request.instance is not None:
        network = ensure_vpc_network(credentials, request.instance)
        instance = create_vpc_instance(credentials, request.instance, image["id"], network)
        instance = wait_for_vpc(credentials, "instance", instance["id"], timeout, interval)
    result = VpcImageResult(
        image_id=image["id"],
        image_crn=image["crn"],
        image_status=image["status"],
        root_key_crn=root.crn,
        key_version=key_version,
        object_uri=uri,
        authorization_policy_ids=policies,
        instance_id=instance["id"] if instance else None,
        instance_status=instance["status"] if instance else None,
        created=created,
    )
    summarize(IMAGE_FLOW)
    return publish_vpc_image(result)


@flow(name=ROTATION_FLOW, persist_result=False, validate_parameters=False)
@refuse_quietly
def rotate_vpc_root_key_flow(
    request: VpcRotationRequest, credentials: IBMCloudCredentials | None = None
) -> VpcRotationResult | Plan:
    """Rotate a root key protecting VPC images (at most once per hour), then prove through Key
    Protect's registrations and the images' state that VPC re-wrapped every image. A key
    rotated since this rotation's day began (`rotation_id`, else the scheduled day) is only
    verified: a re-run never rotates twice. `plan_only`: the rotation it would make (or its
    refusal) and the registrations it would verify.

    Args:
        credentials: A saved 'BYOK IBM Cloud Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `ibm_credentials_block`.
    """
    request = parse_request(VpcRotationRequest, request)
    credentials = IBMCloudCredentials.chosen(credentials, request.ibm_credentials_block)
    if request.plan_only:
        plan_vpc_rotation(credentials, request)
        return publish_plan(ROTATION_FLOW)
    lock = f"ibm:{credentials.account_id}:kms:{request.key_protect_instance_id}:{request.root_key}"
    with resource_lock(lock, wait=False):
        crn, previous, version = rotate_vpc_root_key(credentials, request)
        images = verify_vpc_rewrap(
            credentials, request.key_protect_instance_id, crn, version,
            request.timeout_minutes * 60, request.poll_seconds,
        )  # fmt: skip
    summarize(ROTATION_FLOW)
    return publish_vpc_rotation(
        VpcRotationResult(
            root_key_crn=crn,
            rotated=previous is not None,
            previous_version=previous,
            key_version=version,
            images=images,
        )
    )
