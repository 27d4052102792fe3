"""Root key rotation steps: check the request, rewrap the stored wrapped DEK (which also tells
which key version wrapped it), rotate the root key, and record the rewrapped DEK and its key
version in the encrypted object's metadata (a server-side copy onto itself). The plaintext
DEK is never asked for: rewrap works on the wrapped form only. And the plan of a rotation."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.ibm import IBMCloudCredentials
from blocks.secrets import decode_root_material
from byok.ibm_cos_io import replace_metadata
from byok.ibm_dek import META_KEY_VERSION, META_ROOT_KEY, META_WDEK
from byok.ibm_models import (
    DEK_NAME,
    IbmKeyRotationRequest,
    RewrapInfo,
    RootKeyInfo,
    RotationPlan,
    object_uri,
)
from byok.ibm_validation import check_bucket_location, check_ibm_name, crn_region
from byok.ibm_vpc import check_rotation_due
from byok.outcomes import Change
from byok.validation import InvalidRequest
from clients.ibm import IBMClients
from clients.ibm_cos_objects import bucket_location, encrypted_object, head
from clients.key_protect_keys import find_root_key
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES

NEW_VERSION = "(new version)"


@task(name="Validate the rotation request", cache_policy=NO_CACHE)
def validate_rotation_request(
    credentials: IBMCloudCredentials, request: IbmKeyRotationRequest
) -> RotationPlan:
    """Read-only: the bucket (regional, in the Key Protect region), the encrypted image and
    its byok metadata, the root key that wrapped its DEK (a root key, the one asked for) and,
    for an imported key, the new material."""
    check_ibm_name("guid", "key_protect_instance_id", request.key_protect_instance_id)
    check_ibm_name("guid", "cos_instance_id", request.cos_instance_id)
    check_ibm_name("bucket", "bucket", request.bucket)
    check_ibm_name("object", "object_key", request.object_key)
    region = credentials.region
    if request.root_key and request.root_key.startswith("crn:"):
        if crn_region("root_key", request.root_key) != region:
            raise InvalidRequest(
                "root_key",
                request.root_key,
                f"region mismatch: the key is in {crn_region('root_key', request.root_key)}, the "
                f"credentials (Key Protect endpoint and bucket) in {region}",
            )
    elif request.root_key:
        check_ibm_name("key", "root_key", request.root_key)
    s3 = IBMClients.of(credentials).cos(request.cos_instance_id)
    location = bucket_location(s3, request.bucket)
    if location == "":
        raise InvalidRequest("bucket", request.bucket, "no such bucket")
    check_bucket_location("bucket", request.bucket, location, region)
    stored = encrypted_object(s3, request.bucket, request.object_key)
    if stored is None:
        raise InvalidRequest(
            "object_key", request.object_key, f"no such object in bucket {request.bucket}"
        )
    kp = IBMClients.of(credentials).key_protect(request.key_protect_instance_id)
    ref = request.root_key or stored.root_key_crn
    key = find_root_key(kp, ref)
    if key is None:
        raise InvalidRequest("root_key", ref, "no such root key in the Key Protect instance")
    if key["crn"] != stored.root_key_crn:
        raise InvalidRequest(
            "root_key",
            ref,
            f"the DEK of {request.object_key} is wrapped by {stored.root_key_crn}, not by this "
            "key: rotate that one",
        )
    key = kp.get_key(key["id"])
    if key.get("imported"):
        if not request.root_key_material_block:
            raise InvalidRequest(
                "root_key_material_block",
                None,
                "the root key was imported: rotating it needs the new material (a Secret "
                "block holding 16, 24 or 32 base64-encoded bytes)",
            )
        decode_root_material(request.root_key_material_block)
    root = RootKeyInfo(
        id=key["id"],
        name=key["name"],
        crn=key["crn"],
        imported=bool(key.get("imported")),
        created=False,
    )
    return RotationPlan(
        root_key=root,
        key_version=key["keyVersion"]["id"],
        last_rotated=key.get("lastRotateDate"),
        stored=stored,
    )


@task(name="Rewrap the DEK with the latest key version", **STEP_RETRIES, cache_policy=NO_CACHE)
def rewrap_dek(
    credentials: IBMCloudCredentials, instance_id: str, key_id: str, wrapped: str
) -> RewrapInfo:
    """Rewrap the wrapped DEK under the root key's latest version; the answer also says
    which version wrapped it before (equal versions: nothing was pending)."""
    kp = IBMClients.of(credentials).key_protect(instance_id)
    answer = kp.rewrap(key_id, wrapped)
    before = answer["keyVersion"]["id"]
    after = (answer.get("rewrappedKeyVersion") or answer["keyVersion"])["id"]
    if before == after:
        report(DEK_NAME, None, note=f"wrapped by the latest key version {after}")
    else:
        report(DEK_NAME, "rewrap", changes=[Change(field="key_version", old=before, new=after)])
    return RewrapInfo(wrapped=answer["ciphertext"], previous_version=before, version=after)


@task(name="Rotate the Key Protect root key", **STEP_RETRIES, **IN_MEMORY)
def rotate_root_key(
    credentials: IBMCloudCredentials,
    instance_id: str,
    root: RootKeyInfo,
    material_block: str | None,
) -> str:
    """A new version of the root key (an imported key rotates to the Secret block's
    material); returns the new version id."""
    kp = IBMClients.of(credentials).key_protect(instance_id)
    payload = decode_root_material(material_block) if root.imported and material_block else None
    before = kp.get_key(root.id)["keyVersion"]["id"]
    kp.rotate(root.id, payload)
    version = str(kp.get_key(root.id)["keyVersion"]["id"])
    report(root.crn, "rotate", changes=[Change(field="version", old=before, new=version)])
    return version


@task(name="Record the rewrapped DEK with the image", **STEP_RETRIES, cache_policy=NO_CACHE)
def record_wrapped_dek(
    credentials: IBMCloudCredentials,
    cos_instance_id: str,
    bucket: str,
    key: str,
    root_key_crn: str,
    rewrapped: RewrapInfo,
) -> None:
    """Replace the object's wrapped DEK and key version (copy in place, if the object is
    still the one read; the other metadata kept); nothing to do when already recorded."""
    s3 = IBMClients.of(credentials).cos(cos_instance_id)
    found = head(s3, bucket, key)
    if found is None:
        raise InvalidRequest("object_key", key, f"no such object in bucket {bucket}")
    meta = dict(found.get("Metadata") or {})
    uri = object_uri(credentials.region, bucket, key)
    if meta.get(META_WDEK) == rewrapped.wrapped:
        report(uri, None, note=f"key_version {rewrapped.version}")
        return
    recorded = Change(field="key_version", old=meta.get(META_KEY_VERSION), new=rewrapped.version)
    meta.update(
        {
            META_ROOT_KEY: root_key_crn,
            META_WDEK: rewrapped.wrapped,
            META_KEY_VERSION: rewrapped.version,
        }
    )
    replace_metadata(
        s3, bucket, key, meta, size=int(found["ContentLength"]), etag=str(found["ETag"])
    )
    report(uri, "update", changes=[recorded])


@task(name="Plan the root key rotation", cache_policy=NO_CACHE)
def plan_ibm_key_rotation(request: IbmKeyRotationRequest, found: RotationPlan, uri: str) -> None:
    """What each step of rotate-ibm-root-key would do, from what the validation `found`: a
    rotation (refused within the hour after the last one), unless a crashed run rotated
    already and left the DEK behind; then 1 DEK rewrapped and recorded with the image."""
    root, stored, latest = found.root_key, found.stored, found.key_version
    behind = stored.key_version is not None and stored.key_version != latest
    if behind:
        note = f"rotated to {latest} by an earlier run, not yet recorded"
        report(root.crn, None, step=rotate_root_key.name, note=note, planned=True)
        new = latest
    else:
        check_rotation_due(request.root_key or root.crn, found.last_rotated, datetime.now(UTC))
        rotation = Change(field="version", old=latest, new=NEW_VERSION)
        report(root.crn, "rotate", step=rotate_root_key.name, changes=[rotation], planned=True)
        new = NEW_VERSION
    moved = [Change(field="key_version", old=stored.key_version, new=new)]
    report(DEK_NAME, "rewrap", step=rewrap_dek.name, changes=moved, note="1 DEK", planned=True)
    report(uri, "update", step=record_wrapped_dek.name, changes=moved, planned=True)
