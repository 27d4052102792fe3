"""Parameters and results of the IBM Cloud encrypted-image flow, and what its steps hand on
(no Prefect import; no field ever holds key material or an API key)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from byok.outcomes import PLAN_ONLY
from byok.parameters import IBM_BLOCK_NAME


class VirtualServerOrder(BaseModel):
    """A classic virtual server to order from the imported template."""

    hostname: str = Field(..., description="Host name (lowercase letters, digits, hyphens).")
    domain: str = Field(..., description="Domain, e.g. example.com.")
    datacenter: str = Field(..., description="Datacenter in the image's region, e.g. dal10.")
    cpus: int = Field(2, ge=1, le=56, description="Number of cores.")
    memory_mb: int = Field(4096, ge=1024, description="Memory in MB.")
    hourly: bool = Field(True, description="Hourly (else monthly) billing.")
    local_disk: bool = Field(False, description="Local (else SAN) boot disk.")


class IbmImageRequest(BaseModel):
    """What to encrypt, where to put it and what to create (procedure D)."""

    ibm_credentials_block: str | None = Field(None, description=IBM_BLOCK_NAME)
    key_protect_instance_id: str = Field(..., description="Key Protect instance GUID.")
    root_key: str = Field(
        ..., description="Root key name (created if missing and allowed), id or CRN."
    )
    create_root_key: bool = Field(True, description="Create the root key when none has the name.")
    root_key_material_block: str | None = Field(
        None,
        description="Import the new root key: name of a Secret block holding its base64 "
        "material (16, 24 or 32 bytes). Default: Key Protect generates it.",
    )
    dek_size: Literal[32, 64] = Field(
        64, description="Bytes of a locally generated DEK: 64 (AES-256-XTS) or 32 (AES-128)."
    )
    dek_from_key_protect: bool = Field(
        False, description="Let Key Protect generate the DEK (32 bytes) when wrapping."
    )
    dek_secret_block: str | None = Field(
        None,
        description="Use your own DEK: name of a Secret block holding it base64-encoded "
        "(32 or 64 bytes). It is only read into memory, never stored elsewhere.",
    )
    cos_instance_id: str = Field(..., description="COS instance GUID (for the access policy).")
    bucket: str = Field(..., description="Regional bucket in the Key Protect region.")
    create_bucket: bool = Field(True, description="Create the bucket when it does not exist.")
    bucket_storage_class: Literal["standard", "vault", "cold", "smart"] = Field(
        "standard", description="Storage class of a new bucket."
    )
    source_template_id: int | None = Field(
        None, description="Unencrypted image template to export to COS (copyToIcos)."
    )
    source_object: str | None = Field(
        None, description="Or: key of an unencrypted VHD already in the bucket."
    )
    source_file: str | None = Field(
        None,
        description="Or: path of an unencrypted VHD on the machine running the flow (streamed "
        "from disk, never copied).",
    )
    encrypted_object: str | None = Field(
        None, description="Key of the encrypted VHD to write. Default: `<image_name>.vhd`."
    )
    image_name: str = Field(..., description="Name of the image template to import.")
    image_note: str = Field("", description="Note of the image template.")
    os_reference_code: str = Field(
        ..., description="SoftLayer operating system reference code, e.g. UBUNTU_22_64."
    )
    cloud_init: bool = Field(True, description="The image is cloud-init enabled.")
    byol: bool = Field(False, description="Bring your own license.")
    service_id_name: str = Field(
        "byok-image-import", description="Service ID the import authenticates as."
    )
    order: VirtualServerOrder | None = Field(
        None, description="Order a virtual server from the template once imported."
    )
    multipart_threshold_mb: int = Field(
        200, ge=5, description="Objects above this size (MiB) are uploaded in parts."
    )
    part_size_mb: int = Field(64, ge=5, le=5 * 1024, description="Multipart part size (MiB).")
    timeout_minutes: float = Field(
        60, gt=0, description="How long to wait for each export, import and provisioning."
    )
    poll_seconds: float = Field(10, gt=0, description="Seconds between status checks.")
    dek_file: str | None = Field(
        None,
        description="Also write the plaintext DEK (32 or 64 raw bytes, a vhd-util key file) to "
        "this new path, mode 0600, with its wrapped form in `<path>.wrapped.json` (a re-run "
        "reuses that DEK). Default: the DEK is never written anywhere.",
    )
    wait_for_other_run: bool = Field(
        False,
        description="When another run works on the same image template or object: wait for "
        "it to end (default: fail at once naming the resource).",
    )
    plan_only: bool = PLAN_ONLY

    @model_validator(mode="after")
    def _one_source(self) -> IbmImageRequest:
        sources = (self.source_template_id, self.source_object, self.source_file)
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                "give exactly one of source_template_id, source_object and source_file"
            )
        if self.dek_from_key_protect and self.dek_secret_block:
            raise ValueError("give at most one of dek_from_key_protect and dek_secret_block")
        return self

    @property
    def object_key(self) -> str:
        """Key of the encrypted object."""
        return self.encrypted_object or f"{self.image_name}.vhd"


class RootKeyInfo(BaseModel):
    """The root key that wraps the DEK."""

    id: str
    name: str
    crn: str
    imported: bool
    created: bool


class WrappedDek(BaseModel):
    """A DEK as a run records it: wrapped by the root key, and its keyhash (no key material)."""

    keyhash: str
    root_key_crn: str
    wrapped_dek: str
    key_version: str | None = Field(None, description="Root key version of the wrapped DEK.")


class EncryptedObjectInfo(WrappedDek):
    """An encrypted image already in the bucket, as its metadata describes it."""

    key: str
    size: int


class TemplateInfo(BaseModel):
    """An image template."""

    id: int
    global_identifier: str
    name: str
    status: str
    encrypted: bool
    busy: bool


class ImagePlan(BaseModel):
    """What the read-only validation found."""

    bucket_exists: bool
    template: TemplateInfo | None
    encrypted_object: EncryptedObjectInfo | None
    pending_dek: WrappedDek | None = Field(
        None, description="The DEK a crashed run wrote to the key file and did not upload."
    )


class SourceInfo(BaseModel):
    """The unencrypted VHD that gets encrypted: an object in COS, or a local file."""

    bucket: str
    key: str
    size: int
    exported: bool
    file: str | None = Field(None, description="Local path (then bucket and key are empty).")


class UploadInfo(BaseModel):
    """The stored encrypted image."""

    bucket: str
    key: str
    size: int
    parts: int
    keyhash: str
    reused: bool


class ImportIdentity(BaseModel):
    """The service ID the import authenticates as (its API key travels separately)."""

    id: str
    iam_id: str
    name: str


class InstanceInfo(BaseModel):
    """An ordered virtual server."""

    id: int
    global_identifier: str
    fqdn: str
    provision_date: str


class IbmImageResult(BaseModel):
    """What the flow created or reused (no key material: only the wrapped DEK)."""

    template_id: int
    template_global_identifier: str
    template_name: str
    root_key_id: str
    root_key_crn: str
    key_version: str | None = Field(None, description="Root key version that wrapped the DEK.")
    wrapped_dek: str | None
    keyhash: str | None
    bucket: str
    object_key: str
    object_uri: str
    authorization_policy_id: str
    service_id: str | None
    instance: InstanceInfo | None


class IbmKeyRotationRequest(BaseModel):
    """Rotate the root key of an encrypted image and rewrap its DEK (the wrapped DEK is kept in
    the encrypted object's metadata)."""

    ibm_credentials_block: str | None = Field(None, description=IBM_BLOCK_NAME)
    key_protect_instance_id: str = Field(..., description="Key Protect instance GUID.")
    cos_instance_id: str = Field(..., description="COS instance GUID.")
    bucket: str = Field(..., description="Regional bucket holding the encrypted image.")
    object_key: str = Field(..., description="Key of the encrypted image (.vhd).")
    root_key: str | None = Field(
        None,
        description="Root key name, id or CRN; default the one recorded with the image (it "
        "must be that one either way).",
    )
    root_key_material_block: str | None = Field(
        None,
        description="Imported root keys only: name of a Secret block holding the new base64 "
        "material (16, 24 or 32 bytes) to rotate to.",
    )
    wait_for_other_run: bool = Field(
        False,
        description="When another run works on the same object: wait for it to end (default: "
        "fail at once naming the resource).",
    )
    plan_only: bool = PLAN_ONLY

    @classmethod
    def for_image(
        cls,
        result: IbmImageResult,
        ibm_credentials_block: str,
        key_protect_instance_id: str,
        cos_instance_id: str,
        root_key_material_block: str | None = None,
    ) -> IbmKeyRotationRequest:
        """The rotation of the image a provision run returned."""
        return cls(
            ibm_credentials_block=ibm_credentials_block,
            key_protect_instance_id=key_protect_instance_id,
            cos_instance_id=cos_instance_id,
            bucket=result.bucket,
            object_key=result.object_key,
            root_key=result.root_key_crn,
            root_key_material_block=root_key_material_block,
        )  # fmt: skip


class RotationPlan(BaseModel):
    """What the read-only validation of a rotation found."""

    root_key: RootKeyInfo
    key_version: str
    last_rotated: str | None = Field(None, description="When the root key last rotated.")
    stored: EncryptedObjectInfo


class RewrapInfo(BaseModel):
    """A wrapped DEK rewrapped under the root key's latest version (no key material)."""

    wrapped: str
    previous_version: str
    version: str


class IbmKeyRotationResult(BaseModel):
    """The root key's new version and the rewrapped DEK now recorded with the image."""

    root_key_id: str
    root_key_crn: str
    rotated: bool = Field(
        ..., description="This run rotated the key (False: it finished a crashed run's rewrap)."
    )
    previous_version: str = Field(..., description="Key version that wrapped the DEK before.")
    key_version: str = Field(..., description="Key version that wraps the DEK now.")
    wrapped_dek: str
    keyhash: str
    bucket: str
    object_key: str
    object_uri: str


DEK_NAME = "data encryption key"
"""How a step's row names the DEK (never its value)."""


def object_uri(region: str, bucket: str, key: str) -> str:
    """The cos:// URI of an object in a region."""
    return f"cos://{region}/{bucket}/{key}"


def api_key_name(request: IbmImageRequest) -> str:
    """Name of the single-use API key of this image's import."""
    return f"{request.image_name}-import"


def image_summary(request: IbmImageRequest, result: IbmImageResult) -> str:
    """The markdown artifact: the image and what it relies on (what each step did is the
    run's summary table)."""
    rows = [
        ("Image template", f"{result.template_name} (id {result.template_id}, "
         f"{result.template_global_identifier})"),
        ("Root key", f"{request.root_key} ({result.root_key_crn})"),
        ("Encrypted object", result.object_uri),
        ("Keyhash", f"`{result.keyhash}`" if result.keyhash else "-"),
        ("Authorization", f"server-protect → kms Reader (policy {result.authorization_policy_id})"),
        ("Service ID", result.service_id or "-"),
        ("Virtual server", f"{result.instance.fqdn} (id {result.instance.id})"
         if result.instance else "not ordered"),
    ]  # fmt: skip
    lines = ["# Encrypted IBM Cloud image", "", "| Resource | Value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def lock_ids(account_id: str, region: str, request: IbmImageRequest) -> list[str]:
    """What one run of the request owns: the image template name in the account, and the
    encrypted object (also the rotation's target)."""
    return sorted(
        [
            f"ibm:{account_id}:image-template:{request.image_name}",
            object_uri(region, request.bucket, request.object_key),
        ]
    )


def export_key(image_name: str) -> tuple[str, str]:
    """(the key copyToIcos is given, the key of the exported boot disk)."""
    return f"exports/{image_name}.vhd", f"exports/{image_name}-0.vhd"


def kms_authorization(
    account_id: str, kms_instance_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(subject, resource) of the `server-protect → kms` Reader authorization."""
    return (
        {"accountId": account_id, "serviceName": "server-protect"},
        {"accountId": account_id, "serviceName": "kms", "serviceInstance": kms_instance_id},
    )


def import_scopes(
    account_id: str, cos_instance_id: str, bucket: str, kms_instance_id: str
) -> list[dict[str, str]]:
    """What the import service ID reads: the bucket, and the Key Protect instance."""
    return [
        {
            "accountId": account_id,
            "serviceName": "cloud-object-storage",
            "serviceInstance": cos_instance_id,
            "resourceType": "bucket",
            "resource": bucket,
        },
        {"accountId": account_id, "serviceName": "kms", "serviceInstance": kms_instance_id},
    ]


def policy_name(subject: str, scope: dict[str, str]) -> str:
    """How a step's row names a Reader policy of `subject` on `scope`."""
    target = scope.get("resource") or scope["serviceInstance"]
    return f"{subject} → {scope['serviceName']} {target} (Reader)"
