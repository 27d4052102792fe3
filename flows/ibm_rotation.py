"""Procedure D, key rotation: rotate the Key Protect root key of an encrypted image and rewrap
its DEK, recording the new wrapped DEK and key version with the encrypted object."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import IbmKeyRotationRequest, IbmKeyRotationResult, object_uri
from byok.outcomes import Plan
from tasks.events import emit_byok_event
from tasks.ibm_rotation import (
    plan_ibm_key_rotation,
    record_wrapped_dek,
    rewrap_dek,
    rotate_root_key,
    validate_rotation_request,
)
from tasks.outcomes import publish_plan, summarize
from tasks.run_lock import resource_lock

FLOW = "rotate-ibm-root-key"


@flow(name=FLOW, persist_result=False)
def rotate_ibm_root_key(
    request: IbmKeyRotationRequest, credentials: IBMCloudCredentials | None = None
) -> IbmKeyRotationResult | Plan:
    """Validate → rewrap the stored wrapped DEK (which says whether its key version is the
    latest) → when it is, rotate the root key and rewrap again → record the wrapped DEK and
    key version in the object's metadata → `byok.key.rotated`.

    A re-run after a crash between the rotation and the record finds the wrapped DEK behind
    the key's latest version: it finishes the rewrap without rotating a second time. One
    run per encrypted object at a time (the provision flow takes the same lock). With
    `plan_only`: validate, then say what each step would do (a rotation within the hour
    after the last one is refused: Key Protect allows one rotation per hour).

    Args:
        credentials: A saved 'BYOK IBM Cloud Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `ibm_credentials_block`.
    """
    credentials = IBMCloudCredentials.chosen(credentials, request.ibm_credentials_block)
    uri = object_uri(credentials.region, request.bucket, request.object_key)
    with resource_lock(uri, wait=request.wait_for_other_run):
        return rotate(credentials, request, uri)


def rotate(
    credentials: IBMCloudCredentials, request: IbmKeyRotationRequest, uri: str
) -> IbmKeyRotationResult | Plan:
    """The steps of the flow, under the object's lock."""
    kp_instance = request.key_protect_instance_id
    plan = validate_rotation_request(credentials, request)
    if request.plan_only:
        plan_ibm_key_rotation(request, plan, uri)
        return publish_plan(FLOW)
    root, stored = plan.root_key, plan.stored
    rewrapped = rewrap_dek(credentials, kp_instance, root.id, stored.wrapped_dek)
    rotated = rewrapped.previous_version == rewrapped.version
    if rotated:
        rotate_root_key(credentials, kp_instance, root, request.root_key_material_block)
        rewrapped = rewrap_dek(credentials, kp_instance, root.id, rewrapped.wrapped)
    else:
        get_run_logger().info(
            "The wrapped DEK is behind the key's version %s (a rotation was not recorded): "
            "finishing the rewrap without rotating again",
            rewrapped.version,
        )
    previous = stored.key_version or rewrapped.previous_version
    record_wrapped_dek(
        credentials,
        request.cos_instance_id,
        request.bucket,
        request.object_key,
        root.crn,
        rewrapped,
    )
    result = IbmKeyRotationResult(
        root_key_id=root.id,
        root_key_crn=root.crn,
        rotated=rotated,
        previous_version=previous,
        key_version=rewrapped.version,
        wrapped_dek=rewrapped.wrapped,
        keyhash=stored.keyhash,
        bucket=request.bucket,
        object_key=request.object_key,
        object_uri=uri,
    )
    create_markdown_artifact(
        "\n".join(
            [
                "# IBM root key rotation",
                "",
                "| | |",
                "|---|---|",
                f"| Root key | {root.name} ({root.crn}) |",
                f"| Key version | {previous} → {rewrapped.version} |",
                f"| Rotated in this run | {'yes' if rotated else 'no (rewrap finished)'} |",
                f"| Encrypted object | {uri} |",
            ]
        ),
        description=f"Root key rotation of {request.object_key}",
    )
    emit_byok_event(
        "key.rotated",
        root.crn,
        "key",
        related={"cos-object": uri},
        payload={"new_version": rewrapped.version, "previous_version": previous},
    )
    summarize(FLOW)
    return result
