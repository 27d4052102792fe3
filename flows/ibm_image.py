"""Procedure D: an image encrypted with your own key, imported into IBM Cloud classic
infrastructure, and optionally a virtual server ordered from it (or, `plan_only`, what each
step would do)."""

from __future__ import annotations

import re
from contextlib import ExitStack
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, wait

from blocks.ibm import IBMCloudCredentials
from byok.ibm_dek import DataKey, object_metadata
from byok.ibm_models import (
    IbmImageRequest,
    IbmImageResult,
    SourceInfo,
    UploadInfo,
    api_key_name,
    image_summary,
    lock_ids,
    object_uri,
)
from byok.ibm_pipe import BytePipe, PipeBroken
from byok.outcomes import Plan
from tasks.events import emit_byok_event
from tasks.ibm_cos import ensure_bucket
from tasks.ibm_iam import (
    create_import_api_key,
    ensure_import_service_id,
    ensure_kms_authorization,
    retire_import_api_keys,
)
from tasks.ibm_image_plan import plan_ibm_image
from tasks.ibm_image_source import prepare_source
from tasks.ibm_key_protect import ensure_root_key, prepare_dek, write_dek_file
from tasks.ibm_softlayer import (
    import_image,
    order_virtual_server,
    wait_for_import,
    wait_for_provisioning,
)
from tasks.ibm_transfer import (
    download_image,
    encrypt_image,
    read_local_image,
    upload_image,
)
from tasks.ibm_validation import validate_image_request
from tasks.outcomes import publish_plan, summarize
from tasks.run_lock import resource_lock

FLOW = "provision-encrypted-ibm-image"
MIB = 1024 * 1024
PIPE_CAPACITY = 8 * MIB


def transfer(
    credentials: IBMCloudCredentials,
    request: IbmImageRequest,
    source: SourceInfo,
    data_key: DataKey,
    root_key_crn: str,
) -> UploadInfo:
    """Steps 6-8 at once: download (or read the local file) → encrypt → upload, joined by
    pipes; the first real failure is raised (the others only saw a broken pipe)."""
    plain, encrypted = BytePipe(PIPE_CAPACITY), BytePipe(PIPE_CAPACITY)
    cos = request.cos_instance_id
    read = (
        read_local_image.submit(source, plain)
        if source.file is not None
        else download_image.submit(credentials, cos, source, plain)
    )
    futures: list[PrefectFuture[Any]] = [
        read,
        encrypt_image.submit(data_key, plain, encrypted),
        upload_image.submit(
            credentials,
            cos,
            encrypted,
            request.bucket,
            request.object_key,
            object_metadata(data_key, root_key_crn),
            request.multipart_threshold_mb * MIB,
            request.part_size_mb * MIB,
        ),
    ]
    wait(futures)
    errors: list[Exception] = []
    for future in futures:
        try:
            future.result()
        except Exception as exc:  # gathered: the root cause is raised below
            errors.append(exc)
    if errors:
        raise next((e for e in errors if not isinstance(e, PipeBroken)), errors[0])
    return futures[2].result()


@flow(name=FLOW, persist_result=False)
def provision_encrypted_ibm_image(
    request: IbmImageRequest, credentials: IBMCloudCredentials | None = None
) -> IbmImageResult | Plan:
    """Validate → root key → DEK wrapped by it → server-protect→kms authorization → regional
    bucket → source image in COS → download → encrypt → upload → import service ID and API
    key → createFromIcos and wait (the API key deleted whatever happens) → order a virtual
    server and wait (optional). One run per image template and object at a time. With
    `plan_only`: validate, then read what each step would do.

    Args:
        credentials: A saved 'BYOK IBM Cloud Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `ibm_credentials_block`.
    """
    credentials = IBMCloudCredentials.chosen(credentials, request.ibm_credentials_block)
    if request.plan_only:
        plan_ibm_image(credentials, request, validate_image_request(credentials, request))
        return publish_plan(FLOW)
    with ExitStack() as locks:
        for resource in lock_ids(credentials.account_id, credentials.region, request):
            locks.enter_context(resource_lock(resource, wait=request.wait_for_other_run))
        return provision(credentials, request)


def provision(credentials: IBMCloudCredentials, request: IbmImageRequest) -> IbmImageResult:
    """The steps of the flow, under its locks."""
    log = get_run_logger()
    timeout, interval = request.timeout_minutes * 60, request.poll_seconds
    kp_instance, cos = request.key_protect_instance_id, request.cos_instance_id
    plan = validate_image_request(credentials, request)
    root = ensure_root_key(
        credentials,
        kp_instance,
        request.root_key,
        request.create_root_key,
        request.root_key_material_block,
    )
    template, data_key, upload, identity = plan.template, None, None, None
    if template is None:
        data_key = prepare_dek(
            credentials,
            kp_instance,
            root,
            request.dek_size,
            request.dek_from_key_protect,
            request.dek_secret_block,
            plan.encrypted_object or plan.pending_dek,
        )
        if request.dek_file is not None:
            write_dek_file(data_key, request.dek_file, root.crn)
    authorization = ensure_kms_authorization(credentials, kp_instance)
    ensure_bucket(credentials, cos, request.bucket, request.bucket_storage_class)
    uri = object_uri(credentials.region, request.bucket, request.object_key)
    if data_key is not None:
        stored = plan.encrypted_object
        if stored is not None and stored.keyhash == data_key.keyhash:
            log.info("The bucket already holds the image encrypted with this DEK: not re-uploaded")
            upload = UploadInfo(bucket=request.bucket, key=stored.key, size=stored.size,
                                parts=0, keyhash=stored.keyhash, reused=True)  # fmt: skip
        else:
            source = prepare_source(
                credentials,
                cos,
                request.bucket,
                request.source_template_id,
                request.source_object,
                request.image_name,
                timeout,
                interval,
                request.source_file,
            )
            upload = transfer(credentials, request, source, data_key, root.crn)
        identity = ensure_import_service_id(credentials, request.service_id_name)
    iam_id = identity.iam_id if identity is not None else None
    retire = (credentials, iam_id, request.service_id_name, api_key_name(request),
              request.image_name)  # fmt: skip
    try:
        if data_key is not None and identity is not None:
            api_key = create_import_api_key(
                credentials, identity, cos, request.bucket, kp_instance, api_key_name(request)
            )
            config = {
                "name": request.image_name,
                "note": request.image_note,
                "operatingSystemReferenceCode": request.os_reference_code,
                "uri": uri,
                "crkCrn": root.crn,
                "wrappedDek": data_key.wrapped,
                "isEncrypted": True,
                "cloudInit": request.cloud_init,
                "byol": request.byol,
            }
            template = import_image(credentials, config, api_key)
        assert template is not None
        template = wait_for_import(credentials, template.id, timeout, interval)
    except BaseException:
        # single-use: the key goes when the import fails too (this failure is the one raised)
        retire_import_api_keys(*retire, return_state=True)
        raise
    retire_import_api_keys(*retire)
    instance = None
    if request.order is not None:
        guest_id = order_virtual_server(credentials, request.order, template.global_identifier)
        instance = wait_for_provisioning(credentials, guest_id, timeout, interval)
    stored_object = plan.encrypted_object
    result = IbmImageResult(
        template_id=template.id,
        template_global_identifier=template.global_identifier,
        template_name=template.name,
        root_key_id=root.id,
        root_key_crn=root.crn,
        key_version=data_key.key_version if data_key else None,
        wrapped_dek=data_key.wrapped if data_key else (stored_object and stored_object.wrapped_dek),
        keyhash=upload.keyhash if upload else (stored_object and stored_object.keyhash),
        bucket=request.bucket,
        object_key=request.object_key,
        object_uri=uri,
        authorization_policy_id=authorization,
        service_id=identity.id if identity else None,
        instance=instance,
    )
    create_markdown_artifact(
        image_summary(request, result),
        key="ibm-image-" + re.sub(r"[^a-z0-9]+", "-", request.image_name.lower()).strip("-"),
        description=f"Encrypted image {request.image_name}",
    )
    emit_byok_event(
        "resource.encrypted",
        template.global_identifier,
        "image-template",
        related={"key": root.crn, "cos-object": uri},
        payload={"template_id": template.id, "name": template.name},
    )
    summarize(FLOW)
    return result
