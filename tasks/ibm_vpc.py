"""VPC procedure steps: validation, the LUKS passphrase (in memory, wrapped by the root key),
the image service's COS authorization, qcow2+LUKS encryption and its check, the upload, the
image import and the instance. Every write is get-or-create by name (byok.ibm_writes); tasks
touching the passphrase never persist or cache results."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import SoftLayer
from ibm_boto3.s3.transfer import TransferConfig
from ibm_cloud_sdk_core import ApiException
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from blocks.secrets import load_secret
from byok.errors import InvalidRequest, OperationFailed, PropagationTimedOut
from byok.ibm_cos_io import open_object
from byok.ibm_models import RootKeyInfo, SourceInfo, object_uri, policy_name
from byok.ibm_validation import check_bucket_location, crn_region
from byok.ibm_vpc import (
    IMAGE_SERVICE,
    PASSPHRASE,
    PASSPHRASE_BYTES,
    READY,
    WAIT_STEP,
    Passphrase,
    SourceImage,
    VpcImageRequest,
    VpcImageResult,
    VpcInstanceSpec,
    VpcPlan,
    check_passphrase,
    check_request,
    check_source,
    check_spool,
    image_cos_authorization,
    vpc_resource,
)
from byok.ibm_vpc_qemu import (
    PROBE_HEAD,
    PROBE_TAIL,
    Described,
    describe,
    describe_parts,
    encrypt_to_qcow2,
    free_bytes,
    verify_encrypted,
)
from byok.ibm_writes import create_once
from clients.ibm import IBMClients
from clients.ibm_cos_objects import bucket_location, head
from clients.ibm_policies import ensure_policy, find_policy
from clients.ibm_vpc_resources import find_image, find_instance, find_subnet, find_vpc, named
from clients.key_protect_keys import find_root_key
from clients.softlayer_templates import check_source_template
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES

PART_SIZE = 64 * 1024 * 1024


@task(name="Validate the VPC image request", **IN_MEMORY)
def validate_vpc_request(credentials: IBMCloudCredentials, request: VpcImageRequest) -> VpcPlan:
    """Read-only checks, so that a bad request fails before any write."""
    check_request(request)
    clients = IBMClients.of(credentials)
    location = bucket_location(clients.cos(request.cos_instance_id), request.bucket)
    source = _check_source(clients, request, location)
    vpc = clients.vpc()
    try:
        vpc.get_operating_system(name=request.operating_system)
    except ApiException as exc:
        if exc.status_code != 404:
            raise
        raise InvalidRequest(
            "operating_system", request.operating_system, "not in the VPC operating system catalog"
        ) from None
    if request.instance is not None:
        _check_profile(vpc, request.instance.profile)
    if request.root_key.startswith("crn:"):
        key_region = crn_region("root_key", request.root_key)
        if key_region != credentials.region:
            raise InvalidRequest(
                "root_key",
                request.root_key,
                f"the key is in {key_region}; the bucket and the images are in "
                f"{credentials.region}: they must be in the key's region",
            )
    key = find_root_key(clients.key_protect(request.key_protect_instance_id), request.root_key)
    if key is None and not request.create_root_key:
        raise InvalidRequest("root_key", request.root_key, "no such root key (create_root_key off)")
    if location:
        check_bucket_location("bucket", request.bucket, location, credentials.region)
    if request.passphrase_block:
        check_passphrase(
            request.passphrase_block, load_secret("passphrase_block", request.passphrase_block)
        )
    return VpcPlan(source=source, image=find_image(clients, request.image_name))


def _check_source(
    clients: IBMClients, request: VpcImageRequest, location: str | None
) -> SourceImage | None:
    """The source exists, fits VPC's limit and the spool; a local file is the source as it
    is (a COS object or a template's export is downloaded into the spool later)."""
    if request.source_file is not None:
        local = describe(Path(request.source_file))
        check_source("source_file", request.source_file, local.virtual_size)
        check_spool(request, local.allocated, free_bytes(request.spool_dir))
        return SourceImage(path=request.source_file, format=local.format)
    if request.source_template_id is not None:
        try:
            check_source_template(clients.softlayer(), request.source_template_id)
        except SoftLayer.SoftLayerAPIError as exc:
            if exc.faultCode != 404:  # the REST transport: the HTTP status
                raise
            raise InvalidRequest(
                "source_template_id", request.source_template_id, "no such image template"
            ) from None
        return None
    s3 = clients.cos(request.cos_instance_id)
    key = str(request.source_object)
    found = head(s3, request.bucket, key) if location else None
    if found is None:
        raise InvalidRequest("source_object", key, f"no such object in bucket {request.bucket}")
    size = int(found["ContentLength"])
    check_source("source_object", key, _probe(s3, request.bucket, key, size).virtual_size)
    check_spool(request, 2 * size, free_bytes(request.spool_dir))
    return None


def _probe(s3: Any, bucket: str, key: str, size: int) -> Described:
    """What qemu-img reads in an object, from its first and last bytes (two ranged reads)."""
    with open_object(s3, bucket, key, size) as handle:
        first = handle.read(PROBE_HEAD)
        handle.seek(max(0, size - PROBE_TAIL))
        last = handle.read()
    try:
        return describe_parts(size, first, last)
    except OperationFailed as exc:
        raise InvalidRequest("source_object", key, f"not an image qemu-img reads: {exc}") from None


def _check_profile(vpc: Any, profile: str) -> None:
    """An instance profile; a bare metal profile is refused: encrypted custom images cannot be
    used with one (https://cloud.ibm.com/docs/vpc?topic=vpc-custom-image-cloud-private-catalog,
    and an encrypted image's `allowed_use.bare_metal_server` is false)."""
    if named(vpc.list_instance_profiles().get_result()["profiles"], profile) is not None:
        return
    metal = vpc.list_bare_metal_server_profiles().get_result()["profiles"]
    rule = (
        "a bare metal profile: encrypted custom images cannot be used with bare metal"
        if named(metal, profile) is not None
        else "no such instance profile"
    )
    raise InvalidRequest("instance.profile", profile, rule)


@task(name="Generate and wrap the LUKS passphrase", **STEP_RETRIES, **IN_MEMORY)
def prepare_passphrase(
    credentials: IBMCloudCredentials, instance_id: str, root: RootKeyInfo, block: str | None
) -> Passphrase:
    """A random passphrase (or the Secret block's), base64'd and wrapped by the root key: the
    ciphertext is the image's `encrypted_data_key`."""
    value = load_secret("passphrase_block", block) if block else None
    if value is None:
        value = base64.b64encode(secrets.token_bytes(PASSPHRASE_BYTES)).decode()
    plaintext = base64.b64encode(value.encode()).decode()
    wrapped = IBMClients.of(credentials).key_protect(instance_id).wrap(root.id, plaintext)
    get_run_logger().info("Wrapped the LUKS passphrase with root key %s", root.name)
    made = f"Secret block {block}" if block else f"{PASSPHRASE_BYTES} random bytes"
    report(PASSPHRASE, "wrap" if block else "generate", note=f"{made}, root key {root.name}")
    return Passphrase(
        value=SecretStr(value),
        wrapped=wrapped["ciphertext"],
        key_version=(wrapped.get("keyVersion") or {}).get("id"),
    )


@task(name="Authorize the VPC image service to read COS", **STEP_RETRIES)
def ensure_image_cos_authorization(credentials: IBMCloudCredentials, cos_instance_id: str) -> str:
    """The `is` (images) → cloud-object-storage Reader authorization (get or create)."""
    clients = IBMClients.of(credentials)
    subject, scope = image_cos_authorization(credentials.account_id, cos_instance_id)
    found = find_policy(clients, "authorization", subject, scope, {})
    policy_id = found or ensure_policy(clients, "authorization", subject, scope, {})
    name = policy_name(IMAGE_SERVICE, scope)
    report(name, None if found else "grant", note=f"policy {policy_id}")
    return policy_id


@task(name="Download the source image to the spool", **STEP_RETRIES)
def fetch_source(
    credentials: IBMCloudCredentials,
    request: VpcImageRequest,
    spool: Path,
    export: SourceInfo | None,
) -> SourceImage:
    """The source object (or the template's export) downloaded into the spool, once the
    spool's bound allows it. qemu-img cannot read it in place: it needs random access and
    COS's IAM bearer token (presigned URLs need HMAC keys:
    https://cloud.ibm.com/docs/cloud-object-storage?topic=cloud-object-storage-presign-url)."""
    field, key = (
        ("source_template_id", export.key) if export else ("source_object", request.source_object)
    )
    s3 = IBMClients.of(credentials).cos(request.cos_instance_id)
    found = head(s3, request.bucket, str(key))
    if found is None:
        raise InvalidRequest(field, key, f"no such object in bucket {request.bucket}")
    check_spool(request, 2 * int(found["ContentLength"]), free_bytes(request.spool_dir))
    path = spool / "source"
    s3.download_file(request.bucket, str(key), str(path))
    described = describe(path)
    check_source(field, str(key), described.virtual_size)
    uri = object_uri(credentials.region, request.bucket, str(key))
    report(uri, "download", note=f"{described.format}, {found['ContentLength']} bytes")
    return SourceImage(path=str(path), format=described.format)


@task(name="Encrypt the image to qcow2 + LUKS", **IN_MEMORY)
def encrypt_image(
    source: SourceImage, passphrase: Passphrase, target: Path, iter_time_ms: int
) -> Path:
    """`qemu-img convert` to a LUKS-encrypted qcow2 (the passphrase in a 0600 secret file)."""
    secret = passphrase.value.get_secret_value().encode()
    encrypt_to_qcow2(Path(source.path), target, secret, source.format, iter_time_ms)
    report(target.name, "encrypt", note=f"from the {source.format} source")
    return target


@task(name="Check the encrypted image against the source", **IN_MEMORY)
def verify_image(source: SourceImage, passphrase: Passphrase, target: Path) -> None:
    """`qemu-img check` and `qemu-img compare` with the source (opened with the passphrase)."""
    secret = passphrase.value.get_secret_value().encode()
    verify_encrypted(Path(source.path), target, secret, source.format)
    report(target.name, "verify", note="qemu-img check, and compare with the source")


@task(name="Upload the encrypted image", **STEP_RETRIES)
def upload_encrypted_image(
    credentials: IBMCloudCredentials, cos_instance_id: str, path: Path, bucket: str, key: str
) -> int:
    """Upload (multipart above one part) to the bucket; the object's size."""
    config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE)
    s3 = IBMClients.of(credentials).cos(cos_instance_id)
    s3.upload_file(str(path), bucket, key, Config=config)
    size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    report(object_uri(credentials.region, bucket, key), "upload", note=f"{size} bytes")
    return size


@task(name="Import the VPC image", **STEP_RETRIES, **IN_MEMORY)
def import_vpc_image(
    credentials: IBMCloudCredentials,
    request: VpcImageRequest,
    uri: str,
    passphrase: Passphrase,
    root_key_crn: str,
) -> dict[str, Any]:
    """`create_image` from the object with the wrapped passphrase and the root key CRN; after
    a lost answer, the image is looked up by name before creating again."""
    clients = IBMClients.of(credentials)
    prototype = {
        "name": request.image_name,
        "file": {"href": uri},
        "operating_system": {"name": request.operating_system},
        "encrypted_data_key": passphrase.wrapped,
        "encryption_key": {"crn": root_key_crn},
    }
    image: dict[str, Any] = create_once(
        lambda: clients.vpc().create_image(image_prototype=prototype).get_result(),
        lambda: find_image(clients, request.image_name),
        f"VPC image {request.image_name}",
    )
    report(vpc_resource("image", image["name"]), "import", note=f"id {image['id']}, from {uri}")
    return image


ON_THE_WAY = frozenset({"pending", "starting"})


@task(name="Wait for the VPC resource", task_run_name=WAIT_STEP, **STEP_RETRIES)
def wait_for_vpc(
    credentials: IBMCloudCredentials,
    kind: Literal["image", "instance"],
    resource_id: str,
    timeout: float,
    interval: float,
) -> dict[str, Any]:
    """Poll the image until `available` or the instance until `running`; another state than
    those on the way there fails with IBM's reasons (OperationFailed), the timeout with
    PropagationTimedOut."""
    vpc = IBMClients.of(credentials).vpc()
    read = vpc.get_image if kind == "image" else vpc.get_instance
    done = READY[kind]
    what = f"VPC {kind} {resource_id}"
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        found: dict[str, Any] = read(id=resource_id).get_result()
        if found["status"] == done:
            step, resource = WAIT_STEP.format(kind=kind), vpc_resource(kind, found["name"])
            report(resource, "wait for" if waited else "verify", step=step, note=done)
            return found
        if found["status"] not in ON_THE_WAY:
            reasons = "; ".join(
                f"{r.get('code')}: {r.get('message')}" for r in found.get("status_reasons") or []
            )
            raise OperationFailed(what, f"{found['status']}: {reasons or 'no reason given'}")
        if time.monotonic() > deadline:
            raise PropagationTimedOut(what, f"still {found['status']} after {timeout:g} s")
        time.sleep(interval)
        waited = True


@task(name="Ensure the VPC and subnet", **STEP_RETRIES)
def ensure_vpc_network(credentials: IBMCloudCredentials, spec: VpcInstanceSpec) -> tuple[str, str]:
    """The VPC and the subnet found by name, or created minimal (ids)."""
    clients = IBMClients.of(credentials)
    vpc = clients.vpc()
    network = _got(
        "network",
        spec.vpc_name,
        lambda: find_vpc(clients, spec.vpc_name),
        lambda: vpc.create_vpc(name=spec.vpc_name).get_result(),
    )
    prototype = {
        "name": spec.subnet_name,
        "vpc": {"id": network["id"]},
        "zone": {"name": spec.zone},
        "total_ipv4_address_count": 256,
    }
    subnet = _got(
        "subnet",
        spec.subnet_name,
        lambda: find_subnet(clients, spec.subnet_name),
        lambda: vpc.create_subnet(subnet_prototype=prototype).get_result(),
    )
    return str(network["id"]), str(subnet["id"])


def _got(
    kind: str,
    name: str,
    find: Callable[[], dict[str, Any] | None],
    create: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """The VPC `kind` called `name`: found, or created once (its row says which)."""
    found = find()
    got: dict[str, Any] = found or create_once(create, find, vpc_resource(kind, name))
    report(vpc_resource(kind, name), None if found else "create", note=f"id {got['id']}")
    return got


@task(name="Create the VPC instance", **STEP_RETRIES)
def create_vpc_instance(
    credentials: IBMCloudCredentials,
    spec: VpcInstanceSpec,
    image_id: str,
    network: tuple[str, str],
) -> dict[str, Any]:
    """The instance of this name, or a new one from the image on the subnet."""
    clients = IBMClients.of(credentials)
    prototype = {
        "name": spec.name,
        "profile": {"name": spec.profile},
        "vpc": {"id": network[0]},
        "zone": {"name": spec.zone},
        "image": {"id": image_id},
        "primary_network_interface": {"subnet": {"id": network[1]}},
    }
    return _got(
        "instance",
        spec.name,
        lambda: find_instance(clients, spec.name),
        lambda: clients.vpc().create_instance(instance_prototype=prototype).get_result(),
    )


@task(name="Publish the VPC image")
def publish_vpc_image(result: VpcImageResult) -> VpcImageResult:
    """A markdown artifact of what the run made or reused."""
    create_markdown_artifact(summary(result), key="encrypted-vpc-image")
    return result


def summary(result: VpcImageResult) -> str:
    """The markdown artifact: what the run made or reused."""
    rows = [
        ("VPC image", f"{result.image_id} ({result.image_status})"),
        ("Root key", result.root_key_crn),
        ("Encrypted object", result.object_uri),
        ("Authorizations", ", ".join(result.authorization_policy_ids)),
        ("Instance", f"{result.instance_id} ({result.instance_status})"
         if result.instance_id else "not created"),
    ]  # fmt: skip
    lines = ["# Encrypted IBM Cloud VPC image", "", "| Resource | Value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", "Created in this run: " + (", ".join(result.created) or "nothing (all reused)")]
    return "\n".join(lines)
