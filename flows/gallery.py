"""Procedure A: an Azure Compute Gallery image version encrypted with customer-managed keys
in every target region.

publish-encrypted-image-version: validate (request, subscription, regions, source and its
LUNs, each region's disk encryption sets) → one run per version → SIGEncryption feature and
provider (ensure-feature-registration's steps, run as this run's tasks so that its summary has
them) → gallery and image definition → image version with per-region encryption → wait
for replication (progress artifact) → verify each region's sets → the run's summary.
`plan_only`: what each step would do (feature, gallery, definition, version), nothing
written."""

from __future__ import annotations

from prefect import flow

from blocks.azure import AzureCredentials
from byok.gallery import (
    SIG_ENCRYPTION,
    SIG_ENCRYPTION_TIMEOUT,
    ImageDefinition,
    ImageVersionRequest,
    ImageVersionResult,
)
from byok.outcomes import Plan
from byok.parameters import parse_request
from byok.registration_models import FEATURE_NOT_FOUND
from tasks.disk_encryption_set import check_disk_encryption_sets
from tasks.events import emit_byok_event
from tasks.gallery import (
    ensure_gallery,
    ensure_image_definition,
    plan_image_version,
    start_image_version,
    validate_image_request,
    verify_image_version,
    wait_for_replication,
)
from tasks.outcomes import publish_plan, summarize
from tasks.refusal import refuse_quietly
from tasks.registration import (
    ensure_provider_registered,
    plan_feature_registration,
    register_feature,
    wait_for_feature,
)
from tasks.resource_group import ensure_resource_group
from tasks.run_lock import resource_lock
from tasks.subscription import check_subscription_regions, plan_resource_group

__all__ = [  # the requests and results, importable from the flow that takes them
    "ImageDefinition",
    "ImageVersionRequest",
    "ImageVersionResult",
    "publish_encrypted_image_version",
]


@flow(name="publish-encrypted-image-version", persist_result=True, validate_parameters=False)
@refuse_quietly
def publish_encrypted_image_version(
    request: ImageVersionRequest, credentials: AzureCredentials | None = None
) -> ImageVersionResult | Plan:
    """Validate (request, subscription, regions, sets, source) → one run per version →
    SIGEncryption feature and provider → gallery and image definition → image version with
    per-region encryption → wait for replication (progress artifact) → verify. `plan_only`:
    the plan of those steps, nothing written.

    Args:
        credentials: A saved 'BYOK Azure Credentials' block (picked from the saved blocks);
            empty: the block named by the request's `azure_credentials_block`.
    """
    request = parse_request(ImageVersionRequest, request)
    credentials = AzureCredentials.chosen(credentials, request.azure_credentials_block)
    sub = request.subscription_id or credentials.subscription_id
    rg, gallery, image = request.resource_group, request.gallery_name, request.image_name
    namespace, poll = SIG_ENCRYPTION[0], request.poll_seconds
    check_subscription_regions(
        credentials,
        sub,
        {
            "location": request.location,
            **{f"target_regions[{i}].name": r.name for i, r in enumerate(request.target_regions)},
        },
    )
    check_disk_encryption_sets(credentials, sub, request.set_references(sub))
    validate_image_request(credentials, request, sub)
    if request.plan_only:
        if request.ensure_feature:
            plan_feature_registration(credentials, sub, *SIG_ENCRYPTION, True)
        if request.create_gallery:
            plan_resource_group(credentials, sub, rg)
        plan_image_version(credentials, sub, request)
        return publish_plan("publish-encrypted-image-version")
    with resource_lock(request.version_id(sub), wait=request.wait_for_other_run):
        if request.ensure_feature:
            state = register_feature(credentials, sub, *SIG_ENCRYPTION)
            if state not in ("Registered", FEATURE_NOT_FOUND):  # not found: it went GA
                wait_for_feature(credentials, sub, *SIG_ENCRYPTION, SIG_ENCRYPTION_TIMEOUT, poll)
            ensure_provider_registered(credentials, sub, namespace, SIG_ENCRYPTION_TIMEOUT, poll)
        if request.create_gallery:
            ensure_resource_group(credentials, sub, rg, request.location)
            ensure_gallery(credentials, sub, rg, gallery, request.location)
            ensure_image_definition(
                credentials, sub, rg, gallery, image, request.location, request.definition
            )
        start_image_version(credentials, sub, request)
        wait_for_replication(
            credentials,
            sub,
            rg,
            gallery,
            image,
            request.version,
            request.replication_timeout_minutes * 60,
            request.poll_seconds,
        )
        result = verify_image_version(credentials, sub, request)
        emit_byok_event(
            "resource.encrypted",
            result.id,
            "gallery-image-version",
            related={f"disk-encryption-set-{i}": s for i, s in enumerate(result.encryption_sets())},
        )
        summarize("publish-encrypted-image-version")
        return result
