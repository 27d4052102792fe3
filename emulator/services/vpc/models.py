"""VPC state: images (imported from COS, encrypted with a Key Protect root key), VPCs,
subnets and instances, with IBM's status lifecycles (images pending → available | failed, and
`unusable` while the root key is disabled; instances pending → running).
Shapes: https://cloud.ibm.com/apidocs/vpc/latest (and ibm_vpc.vpc_v1.Image.from_dict)."""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from emulator.cos import COS_URI, CosServer, regional_location
from emulator.services.ibm_iam.models import READ_ROLES, IamModel, now_iso
from emulator.services.keyprotect.models import ACTIVE, KeyProtectModel
from emulator.services.vpc.catalog import (
    MAX_IMAGE_BYTES,
    ZONES,
    instance_profiles,
    operating_systems,
)
from emulator.services.vpc.errors import (
    ImageNotUsable,
    InvalidField,
    NameNotUnique,
    NotFound,
)
from emulator.services.vpc.qcow import BadImage, DataKeyInvalid, check_encrypted

IMAGE_SERVICE = "is"  # the VPC image service, the source of the COS authorization
UNWRAP_SERVICE = "server-protect"  # the source of the kms authorization
RESOURCE_GROUP = {
    "id": "fee82deba12e4c0fb69c3b09d1f12345",
    "name": "Default",
    "href": "https://resource-controller.cloud.ibm.com/v2/resource_groups/"
    "fee82deba12e4c0fb69c3b09d1f12345",
}


@dataclass
class Resource:
    """A named regional resource of the account."""

    id: str
    name: str
    crn: str
    href: str
    created_at: str = field(default_factory=now_iso)
    ready_at: float = 0.0  # monotonic time its pending state ends
    body: dict[str, Any] = field(default_factory=dict)  # the request's other fields


@dataclass
class Image(Resource):
    """An imported custom image."""

    status: str = "pending"
    reasons: list[dict[str, str]] = field(default_factory=list)
    size: int = 0


@dataclass
class Instance(Resource):
    """A virtual server instance."""

    status: str = "pending"
    reasons: list[dict[str, str]] = field(default_factory=list)
    boot_key: str | None = None  # the root key CRN protecting its boot volume


INSTANCE_ACTIONS = ("start", "stop", "reboot")


def _required(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value in (None, ""):
        raise InvalidField(f"{path} is required", path)
    return value


class VpcModel:
    """The VPC API's resources in the emulated account's region."""

    import_seconds = 0.5
    boot_seconds = 0.5

    def __init__(
        self, iam: IamModel, kp: KeyProtectModel, cos: CosServer | None, base: str, region: str
    ) -> None:
        self.iam, self.kp, self.cos, self.base, self.region = iam, kp, cos, base, region
        self.lock = threading.RLock()
        self.images: dict[str, Image] = {}
        self.vpcs: dict[str, Resource] = {}
        self.subnets: dict[str, Resource] = {}
        self.instances: dict[str, Instance] = {}
        self.operating_systems = operating_systems(base)
        self.profiles = instance_profiles(base)
        self._cidrs = itertools.count(0)

    def _new(self, kind: str, collection: str, name: str, pool: dict[str, Any]) -> dict[str, Any]:
        if any(r.name == name for r in pool.values()):
            raise NameNotUnique(f"Provided Name ({name}) is not unique", "name", name)
        rid = f"r006-{uuid.uuid4()}"
        crn = f"crn:v1:bluemix:public:is:{self.region}:a/{self.iam.account_id}::{kind}:{rid}"
        return {"id": rid, "name": name, "crn": crn, "href": f"{self.base}/{collection}/{rid}"}

    # -- images -------------------------------------------------------------------------------
    def create_image(self, body: dict[str, Any]) -> Image:
        """Start an import; the object, key and authorizations are checked when it ends."""
        name = _required(body, "name")
        href = _required(body, "file.href")
        if not COS_URI.match(href):
            raise InvalidField(f"file.href {href!r}: expected cos://<region>/<bucket>/<object>")
        os_name = _required(body, "operating_system.name")
        if os_name not in self.operating_systems:
            raise InvalidField(f"operating_system.name {os_name!r} is not in the catalog")
        wrapped = body.get("encrypted_data_key")
        crn = (body.get("encryption_key") or {}).get("crn")
        if bool(wrapped) != bool(crn):
            raise InvalidField(
                "encrypted_data_key and encryption_key.crn must be given together",
                "encrypted_data_key",
            )
        with self.lock:
            image = Image(**self._new("image", "images", name, self.images), body=body)
            image.ready_at = time.monotonic() + self.import_seconds
            self.images[image.id] = image
        return image

    def image(self, image_id: str) -> Image:
        """An image, its import settled."""
        with self.lock:
            image = self.images.get(image_id)
            if image is None:
                raise NotFound(f"Image not found: {image_id}")
            if image.status == "pending" and time.monotonic() >= image.ready_at:
                self._settle(image)
            return image

    def delete_image(self, image_id: str) -> None:
        """Delete an image (its Key Protect registration goes with it)."""
        with self.lock:
            image = self.image(image_id)
            del self.images[image_id]
        self.kp.unregister(image.crn)

    def image_json(self, image: Image) -> dict[str, Any]:
        """An image as the API answers it; `unusable` while its root key is not active. Status
        reason codes: ibm-vpc's ImageStatusReason (image_request_in_progress while pending)."""
        status, reasons = image.status, list(image.reasons)
        if status == "pending":
            reasons = [
                {
                    "code": "image_request_in_progress",
                    "message": "The image is being imported from Cloud Object Storage.",
                }
            ]
        crn = (image.body.get("encryption_key") or {}).get("crn")
        if status == "available" and crn and not self._key_active(crn):
            status = "unusable"
            reasons = [
                {
                    "code": "encryption_key_disabled",
                    "message": f"The encryption key {crn} is disabled.",
                }
            ]
        os_name = image.body["operating_system"]["name"]
        return {
            "id": image.id,
            "crn": image.crn,
            "href": image.href,
            "name": image.name,
            "created_at": image.created_at,
            "status": status,
            "status_reasons": reasons,
            "encryption": "user_managed" if crn else "none",
            **({"encryption_key": {"crn": crn}} if crn else {}),
            "file": {"size": max(1, image.size // 1024**3)} if image.size else {},
            "minimum_provisioned_size": max(10, -(-image.size // 1024**3)),
            "operating_system": self.operating_systems[os_name],
            "allowed_use": {
                "api_version": "2024-11-12",
                "bare_metal_server": "false" if crn else "true",
                "instance": "true",
            },
            "catalog_offering": {"managed": False},
            "resource_group": RESOURCE_GROUP,
            "resource_type": "image",
            "user_data_format": "cloud_init",
            "visibility": "private",
            "zones": [],
        }

    def _key_active(self, crn: str) -> bool:
        parts = crn.split(":")
        with self.kp.lock:
            instance = self.kp.instances.get(parts[7]) if len(parts) == 10 else None
            key = instance.keys.get(parts[9]) if instance else None
        return key is not None and key.state == ACTIVE

    def _settle(self, image: Image) -> None:
        try:
            image.size = self._import(image)
        except BadImage as exc:
            image.status = "failed"
            image.reasons = [{"code": exc.code, "message": str(exc)}]
            return
        image.status = "available"
        crn = (image.body.get("encryption_key") or {}).get("crn")
        if crn:
            self.kp.register(crn, image.crn)

    def _import(self, image: Image) -> int:
        """The image's virtual size; BadImage saying why the import fails."""
        match = COS_URI.match(image.body["file"]["href"])
        assert match is not None and self.cos is not None
        bucket, key = match["bucket"], match["key"]
        resource = self.iam.bucket(bucket)
        if not self.iam.authorized(IMAGE_SERVICE, resource, READ_ROLES):
            raise BadImage(
                f"the image service (is) is not authorized to read COS bucket {bucket!r}: "
                "create the authorization is (images) -> cloud-object-storage Reader"
            )
        try:
            location = self.cos.location(bucket)
        except ClientError:
            raise BadImage(f"COS bucket {bucket!r} does not exist") from None
        if not regional_location(location, match["region"]) or match["region"] != self.region:
            raise BadImage(f"COS bucket {bucket!r} ({location}) is not regional in {self.region}")
        passphrase = None
        if image.body.get("encrypted_data_key"):
            try:
                passphrase = self.kp.unwrap_for_service(
                    image.body["encryption_key"]["crn"],
                    image.body["encrypted_data_key"],
                    UNWRAP_SERVICE,
                )
            except ValueError as exc:
                raise DataKeyInvalid(str(exc)) from None
        with tempfile.TemporaryDirectory(prefix="vpc-image-") as scratch:
            path = Path(scratch) / "image.qcow2"
            try:
                self.cos.client.download_file(bucket, key, str(path))
            except ClientError:
                raise BadImage(f"object {key!r} does not exist in bucket {bucket!r}") from None
            size = check_encrypted(path, passphrase)
        if size > MAX_IMAGE_BYTES:
            raise BadImage(f"the image's virtual size {size} exceeds 250 GB")
        return size

    # -- VPCs and subnets ---------------------------------------------------------------------
    def create_vpc(self, body: dict[str, Any]) -> Resource:
        """A VPC (available at once)."""
        with self.lock:
            vpc = Resource(**self._new("vpc", "vpcs", _required(body, "name"), self.vpcs))
            self.vpcs[vpc.id] = vpc
        return vpc

    def create_subnet(self, body: dict[str, Any]) -> Resource:
        """A subnet of a VPC in a zone."""
        name = _required(body, "name")
        vpc = self.get(self.vpcs, _required(body, "vpc.id"), "VPC")
        zone = _required(body, "zone.name")
        if zone not in ZONES:
            raise InvalidField(f"zone.name {zone!r} is not a zone of {self.region}", "zone.name")
        with self.lock:
            subnet = Resource(**self._new("subnet", "subnets", name, self.subnets))
            subnet.body = {
                "vpc": {"id": vpc.id, "name": vpc.name, "crn": vpc.crn, "href": vpc.href},
                "zone": {"name": zone},
                "ipv4_cidr_block": f"10.240.{next(self._cidrs)}.0/24",
            }
            self.subnets[subnet.id] = subnet
        return subnet

    @staticmethod
    def get(pool: dict[str, Any], rid: str, kind: str) -> Any:
        """A VPC or subnet by id."""
        found = pool.get(rid)
        if found is None:
            raise NotFound(f"{kind} not found: {rid}")
        return found

    # -- instances ----------------------------------------------------------------------------
    def create_instance(self, body: dict[str, Any]) -> Instance:
        """An instance from an available image, on a subnet (booting)."""
        name = _required(body, "name")
        profile = _required(body, "profile.name")
        if profile not in self.profiles:
            raise InvalidField(f"profile.name {profile!r} is not an instance profile", "profile")
        vpc = self.get(self.vpcs, _required(body, "vpc.id"), "VPC")
        subnet_id = _required(body, "primary_network_interface.subnet.id")
        subnet = self.get(self.subnets, subnet_id, "Subnet")
        if subnet.body["vpc"]["id"] != vpc.id or subnet.body["zone"]["name"] != _required(
            body, "zone.name"
        ):
            raise InvalidField("the subnet is not in the instance's VPC and zone", "zone")
        image = self.image(_required(body, "image.id"))
        shown = self.image_json(image)
        if shown["status"] != "available":
            reasons = ", ".join(r["code"] for r in shown["status_reasons"])
            raise ImageNotUsable(f"Image {image.id} is {shown['status']} ({reasons})", "image")
        with self.lock:
            instance = Instance(**self._new("instance", "instances", name, self.instances))
            instance.body = {
                "profile": {"name": profile},
                "vpc": {"id": vpc.id, "name": vpc.name},
                "zone": {"name": subnet.body["zone"]["name"]},
                "image": {"id": image.id, "name": image.name, "crn": image.crn},
                "primary_network_interface": {"subnet": {"id": subnet.id, "name": subnet.name}},
            }
            instance.boot_key = (image.body.get("encryption_key") or {}).get("crn")
            instance.ready_at = time.monotonic() + self.boot_seconds
            self.instances[instance.id] = instance
        return instance

    def instance(self, instance_id: str) -> Instance:
        """An instance, running once booted."""
        with self.lock:
            instance = self.get(self.instances, instance_id, "Instance")
            if instance.status == "pending" and time.monotonic() >= instance.ready_at:
                instance.status = "running"
            return instance

    def instance_action(self, instance_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /instances/{id}/actions`: stop, start or reboot. An instance whose boot image's
        root key is disabled cannot start again: a start or reboot fails and leaves it
        `stopped` with reason `cannot_start_storage` (what disabling a root key does to the
        resources it protects: https://cloud.ibm.com/docs/vpc?topic=vpc-vpc-encryption-managing;
        the reason codes: https://cloud.ibm.com/apidocs/vpc/latest#get-instance). A running
        instance keeps running until it is stopped or rebooted."""
        kind = _required(body, "type")
        if kind not in INSTANCE_ACTIONS:
            raise InvalidField(
                f"type {kind!r}: expected one of {', '.join(INSTANCE_ACTIONS)}", "type"
            )
        with self.lock:
            instance = self.instance(instance_id)
            crn, status = instance.boot_key, "completed"
            if kind == "stop":
                instance.status, instance.reasons = "stopped", []
            elif crn and not self._key_active(crn):
                status = "failed"
                instance.status = "stopped"
                instance.reasons = [
                    {
                        "code": "cannot_start_storage",
                        "message": f"The boot volume's encryption key {crn} is disabled.",
                    }
                ]
            else:
                instance.status, instance.reasons = "running", []
        now = now_iso()
        return {
            "id": str(uuid.uuid4()),
            "href": f"{instance.href}/actions",
            "type": kind,
            "force": bool(body.get("force")),
            "status": status,
            "created_at": now,
            "started_at": now,
            "completed_at": now,
        }

    @staticmethod
    def resource_json(resource: Resource, resource_type: str, **extra: Any) -> dict[str, Any]:
        """A VPC, subnet or instance as the API answers it."""
        return {
            "id": resource.id,
            "crn": resource.crn,
            "href": resource.href,
            "name": resource.name,
            "created_at": resource.created_at,
            "resource_type": resource_type,
            "resource_group": RESOURCE_GROUP,
            **resource.body,
            **extra,
        }
