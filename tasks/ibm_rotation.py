"""Root key rotation steps: check the request, rewrap the stored wrapped DEK (which also tells
which key version wrapped it), rotate the root key, and record the rewrapped DEK and its key
version in the encrypted object's metadata (a server-side copy onto itself). The plaintext
DEK is never asked for: rewrap works on the wrapped form only."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.ibm import IBMCloudCredentials
from blocks.secrets import decode_root_material
from byok.ibm_cos_io import replace_metadata
from byok.ibm_dek import META_KEY_VERSION, META_ROOT_KEY, META_WDEK
from byok.ibm_models import IbmKeyRotationRequest, RewrapInfo, RootKeyInfo, RotationPlan
from byok.ibm_validation import check_bucket_location, check_ibm_name, crn_region
from byok.validation import InvalidRequest
from clients.ibm import IBMClients
from clients.ibm_cos_objects import bucket_location, encrypted_object, head
from clients.key_protect_keys import find_root_key
from tasks.in_memory import IN_MEMORY
from tasks.retry import STEP_RETRIES


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
    return RotationPlan(root_key=root, key_version=key["keyVersion"]["id"], stored=stored)


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
    get_run_logger().info("Wrapped DEK: key version %s, rewrapped under %s", before, after)
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
    kp.rotate(root.id, payload)
    version = str(kp.get_key(root.id)["keyVersion"]["id"])
    get_run_logger().info("Rotated root key %s: new version %s", root.name, version)
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
    if meta.get(META_WDEK) == rewrapped.wrapped:
        return
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
    get_run_logger().info("Recorded key version %s with %s/%s", rewrapped.version, bucket, key)
