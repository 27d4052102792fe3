"""IBM Cloud VPC encrypted images: the request, the result and their rules (no Prefect
import; nothing here ever holds the passphrase). Limits from
https://cloud.ibm.com/docs/vpc?topic=vpc-planning-custom-images (qcow2, ≤ 250 GB virtual size)
and https://cloud.ibm.com/docs/vpc?topic=vpc-create-encrypted-custom-image."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from byok.errors import InvalidRequest
from byok.outcomes import PLAN_ONLY
from byok.parameters import IBM_BLOCK_NAME

MAX_IMAGE_SIZE = 250 * 1024**3
ROTATION_INTERVAL = timedelta(hours=1)  # Key Protect: one rotation per key per hour
SPOOL_SLACK = 64 * 1024**2  # qcow2 and LUKS metadata beside the data (a LUKS header: ~2 MB)
MIN_PASSPHRASE = 16  # characters of a passphrase brought from a Secret block
PASSPHRASE_BYTES = 32  # of a generated one (then base64: 44 characters)
# VPC resource names: lowercase letters, digits and hyphens, starting with a letter
# (https://cloud.ibm.com/apidocs/vpc/latest#create-image, `name` pattern).
VPC_NAME = re.compile(r"^-?([a-z]|[a-z][-a-z0-9]*[a-z0-9])$")
OBJECT_KEY = re.compile(r"^(?!/)[\x21-\x7e][\x20-\x7e]{0,1017}\.qcow2$")
PASSPHRASE = "LUKS passphrase"  # how the steps' rows name it (never its value)
ENCRYPTED_FILE = "image.qcow2"  # the encrypted image in the spool, before its upload
IMAGE_SERVICE = "is (images)"  # the VPC image service, as an authorization's row names it
READY = {"image": "available", "instance": "running"}  # what each VPC resource is polled until
WAIT_STEP = "Wait for the VPC {kind}"  # the name of the wait step for each kind
# A rotation id names its UTC day at its end, as the fleet's do (`fleet-<digest>-20261202`)
ROTATION_DAY = re.compile(r"^(?:.*\D)?(\d{4})-?(\d{2})-?(\d{2})$")


class VpcInstanceSpec(BaseModel):
    """A virtual server instance to create from the image (VPC and subnet found by name or
    created minimal)."""

    name: str = Field(..., description="Instance name.")
    profile: str = Field("bx2-2x8", description="Instance profile.")
    zone: str = Field(..., description="Zone, e.g. us-south-1.")
    vpc_name: str = Field(..., description="VPC (found by name or created).")
    subnet_name: str = Field(..., description="Subnet in the zone (found by name or created).")


class VpcImageRequest(BaseModel):
    """What to encrypt, where to put it and what to create (the VPC procedure)."""

    ibm_credentials_block: str | None = Field(None, description=IBM_BLOCK_NAME)
    key_protect_instance_id: str = Field(..., description="Key Protect instance GUID.")
    root_key: str = Field(..., description="Root key name (created if missing), id or CRN.")
    create_root_key: bool = Field(True, description="Create the root key when none has the name.")
    root_key_material_block: str | None = Field(
        None, description="Import a new root key from this Secret block (base64 material)."
    )
    passphrase_block: str | None = Field(
        None,
        description="Secret block holding the LUKS passphrase (at least 16 characters). "
        "Default: a random one generated in memory.",
    )
    cos_instance_id: str = Field(..., description="COS instance GUID.")
    bucket: str = Field(..., description="Regional bucket in the Key Protect region.")
    bucket_storage_class: str = Field("standard", description="Storage class of a new bucket.")
    object_key: str = Field(..., description="Object key of the encrypted qcow2 (…​.qcow2).")
    source_file: str | None = Field(
        None, description="Local source image (any format qemu-img reads)."
    )
    source_object: str | None = Field(
        None, description="Source image already in the bucket (any format qemu-img reads)."
    )
    source_template_id: int | None = Field(
        None,
        description="Classic image template to export to the bucket first (as the classic "
        "procedure does: copyToIcos into exports/).",
    )
    spool_dir: str | None = Field(
        None,
        description="Where a source from COS and the encrypted image are held before the "
        "upload (default: the system's temporary directory).",
    )
    spool_limit_gb: float = Field(
        520, gt=0, description="At most this much spool: a downloaded source and its copy."
    )
    image_name: str = Field(..., description="VPC image name.")
    operating_system: str = Field(..., description="VPC operating system name.")
    instance: VpcInstanceSpec | None = Field(None, description="Create an instance from it.")
    luks_iter_time_ms: int = Field(
        2000, ge=1, le=60000, description="LUKS PBKDF time (qemu-img's default 2000 ms)."
    )
    timeout_minutes: float = Field(60, gt=0, description="Give up waiting after this long.")
    poll_seconds: float = Field(10, gt=0, description="Seconds between status polls.")
    wait_for_other_run: bool = Field(True, description="Wait for a run on the same image.")
    plan_only: bool = PLAN_ONLY

    @model_validator(mode="after")
    def _one_source(self) -> VpcImageRequest:
        sources = (self.source_file, self.source_object, self.source_template_id)
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                "give exactly one of source_file, source_object and source_template_id"
            )
        return self


class VpcImageResult(BaseModel):
    """What the run made or reused (never the passphrase)."""

    image_id: str
    image_crn: str
    image_status: str
    root_key_crn: str
    key_version: str | None
    object_uri: str
    authorization_policy_ids: list[str]
    instance_id: str | None = None
    instance_status: str | None = None
    created: list[str]


def check_request(request: VpcImageRequest) -> None:
    """Static rules (names); field = value: rule."""
    names = [("image_name", request.image_name)]
    if request.instance is not None:
        spec = request.instance
        names += [
            ("instance.name", spec.name),
            ("instance.vpc_name", spec.vpc_name),
            ("instance.subnet_name", spec.subnet_name),
        ]
    for field, value in names:
        if not VPC_NAME.match(value) or len(value) > 63:
            raise InvalidRequest(
                field, value, "VPC names are 1-63 lowercase letters, digits and hyphens, "
                "starting with a letter and not ending with a hyphen"
            )  # fmt: skip
    if not OBJECT_KEY.match(request.object_key):
        raise InvalidRequest(
            "object_key", request.object_key, "1-1024 printable ASCII characters ending '.qcow2'"
        )
    if request.source_object == request.object_key:
        raise InvalidRequest(
            "source_object", request.source_object, "the source cannot be the encrypted image"
        )


def check_source(field: str, value: str, virtual_size: int) -> None:
    """The source's virtual size fits VPC's limit."""
    if virtual_size > MAX_IMAGE_SIZE:
        raise InvalidRequest(
            field, value, f"virtual size {virtual_size} bytes exceeds VPC's 250 GB image limit"
        )


def check_spool(request: VpcImageRequest, need: int, free: int) -> None:
    """The spool can hold `need` bytes (plus metadata) within its limit and its free space."""
    need += SPOOL_SLACK
    if need > request.spool_limit_gb * 1024**3:
        raise InvalidRequest(
            "spool_limit_gb",
            request.spool_limit_gb,
            f"the source needs about {need} bytes of spool (a download and its encrypted copy)",
        )
    if need > free:
        raise InvalidRequest(
            "spool_dir",
            request.spool_dir or "(the temporary directory)",
            f"{free} bytes free; the source needs about {need}",
        )


def check_passphrase(block: str, passphrase: str) -> None:
    """A passphrase from a Secret block must be long enough (its value never shown)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise InvalidRequest(
            "passphrase_block",
            block,
            f"the passphrase must be at least {MIN_PASSPHRASE} characters",
        )


def image_cos_authorization(
    account_id: str, cos_instance_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(subject, resource) of the `is` (images) → COS Reader authorization the import needs,
    https://cloud.ibm.com/docs/vpc?topic=vpc-object-storage-prereq."""
    return (
        {"accountId": account_id, "serviceName": "is", "resourceType": "image"},
        {
            "accountId": account_id,
            "serviceName": "cloud-object-storage",
            "serviceInstance": cos_instance_id,
        },
    )


def vpc_resource(kind: str, name: str) -> str:
    """How the steps' rows name a VPC resource: `VPC image x`, `VPC instance y`."""
    return f"VPC {kind} {name}"


def image_lock_id(account_id: str, region: str, image_name: str) -> str:
    """What one run owns: the image name in the account's region."""
    return f"ibm:{account_id}:{region}:vpc-image:{image_name}"


class VpcRotationRequest(BaseModel):
    """Rotate a root key that protects VPC images, and prove VPC re-wrapped them."""

    ibm_credentials_block: str | None = Field(None, description=IBM_BLOCK_NAME)
    key_protect_instance_id: str = Field(..., description="Key Protect instance GUID.")
    root_key: str = Field(..., description="Root key name, id or CRN.")
    root_key_material_block: str | None = Field(
        None,
        description="An imported root key's new material: name of a Secret block holding 16, "
        "24 or 32 bytes, base64 (Key Protect rotates imported keys only with it).",
    )
    timeout_minutes: float = Field(10, gt=0, description="Give up waiting for the re-wrap.")
    poll_seconds: float = Field(5, gt=0, description="Seconds between registration polls.")
    rotation_id: str | None = Field(
        None,
        description="This rotation's id, ending in the UTC day it is for (YYYYMMDD or "
        "YYYY-MM-DD, like the fleet rotation's `fleet-…-20261202`): Key Protect keys carry no "
        "tags, so a key last rotated on or after that day began was rotated by this rotation, "
        "and a re-run only verifies. Empty: the day the run was scheduled for (a retry keeps it).",
    )
    plan_only: bool = PLAN_ONLY

    @field_validator("rotation_id")
    @classmethod
    def _names_a_day(cls, value: str | None) -> str | None:
        if value is not None and _named_day(value) is None:
            raise ValueError(
                "must end in the UTC day the rotation is for: YYYYMMDD or YYYY-MM-DD "
                "(like the fleet rotation's `fleet-…-20261202`)"
            )
        return value

    def began(self, scheduled: datetime) -> datetime:
        """When this rotation began: the start of the UTC day its `rotation_id` names, else of
        the day the run was `scheduled` for."""
        return _named_day(self.rotation_id or "") or rotation_began(scheduled)


def _named_day(rotation_id: str) -> datetime | None:
    found = ROTATION_DAY.match(rotation_id)
    if found is None:
        return None
    try:
        return datetime.strptime("".join(found.groups()), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:  # no such day
        return None


class RegisteredImage(BaseModel):
    """A VPC image registered with the key, after the rotation."""

    resource_crn: str
    key_version: str
    status: str


class VpcRotationResult(BaseModel):
    """The key's versions before and after, and every registered image on the new one."""

    root_key_crn: str
    rotated: bool = Field(
        description="False: rotated already by this rotation (an earlier run), only verified."
    )
    previous_version: str | None = Field(None, description="None: not rotated by this run.")
    key_version: str
    images: list[RegisteredImage]


def rotation_began(scheduled: datetime) -> datetime:
    """When the rotation scheduled at `scheduled` began, as Key Protect can tell: the start of
    its UTC day. Key Protect keys carry no tags, so a rotation's day stands for its id."""
    day = scheduled.astimezone(UTC).date()  # a plain date: Prefect's times are pendulum's
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def rotated_since(last_rotated: str | None, began: datetime | None) -> datetime | None:
    """When a key (Key Protect's `lastRotateDate`) was rotated by the rotation that `began`:
    on or after it, that rotation rotated it, and a re-run verifies, never rotates again.
    None: not by it."""
    if not last_rotated or began is None:
        return None
    last = datetime.fromisoformat(last_rotated.replace("Z", "+00:00"))
    return last if last >= began else None


def check_rotation_due(ref: str, last_rotated: str | None, now: datetime) -> None:
    """Key Protect allows one rotation per hour per key
    (https://cloud.ibm.com/docs/key-protect?topic=key-protect-rotate-keys)."""
    if not last_rotated:
        return
    due = datetime.fromisoformat(last_rotated) + ROTATION_INTERVAL
    if now < due:
        raise InvalidRequest(
            "root_key",
            ref,
            f"rotated at {last_rotated}: Key Protect allows one rotation per hour; "
            f"the next one is possible at {due.isoformat()}",
        )


class SourceImage(BaseModel):
    """A source image on this machine, as qemu-img reads it."""

    path: str
    format: str


class VpcPlan(BaseModel):
    """What validation found: a local source and an image already named so."""

    source: SourceImage | None
    image: dict[str, Any] | None


class Passphrase(BaseModel):
    """The LUKS passphrase (masked in any repr) and its wrapped form."""

    value: SecretStr
    wrapped: str
    key_version: str | None
