"""SoftLayer (classic infrastructure) state: image templates with their import and export
transactions, and virtual servers ordered from them."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from emulator.cos import COS_URI, CosServer, regional_location
from emulator.http import HttpError, Response
from emulator.services.ibm_iam.models import (
    READ_ROLES,
    WRITE_ROLES,
    ApiKey,
    IamModel,
    now_iso,
)
from emulator.services.keyprotect.models import KeyProtectModel
from emulator.services.softlayer.vhd import NotAVhd, fixed_vhd, key_matches, read_disk

SOFTLAYER_ACCOUNT = 2710310
MAX_IMAGE_SIZE = 100 * 1024**3
SEED_TEMPLATE_ID = 1900001
SEED_IMAGE_SIZE = 4 * 1024 * 1024
# SoftLayer_Virtual_Guest_Block_Device_Template_Group::getVhdImportSoftwareDescriptions (a
# subset): the operating systems an imported VHD may declare, by reference code.
# https://sldn.softlayer.com/reference/services/SoftLayer_Virtual_Guest_Block_Device_Template_Group/getVhdImportSoftwareDescriptions/
VHD_IMPORT_OS = {
    "UBUNTU_20_64": ("Ubuntu", "20.04-64 Minimal for VSI"),
    "UBUNTU_22_64": ("Ubuntu", "22.04-64 Minimal for VSI"),
    "UBUNTU_24_64": ("Ubuntu", "24.04-64 Minimal for VSI"),
    "DEBIAN_12_64": ("Debian", "12.0.0-64 Minimal for VSI"),
    "REDHAT_8_64": ("Red Hat Enterprise Linux", "8.0-64 Minimal for VSI"),
    "REDHAT_9_64": ("Red Hat Enterprise Linux", "9.0-64 Minimal for VSI"),
    "CENTOS_STREAM_9_64": ("CentOS Stream", "9-64 Minimal for VSI"),
    "ROCKYLINUX_9_64": ("Rocky Linux", "9.0-64 Minimal for VSI"),
    "WIN_2022-STD_64": ("Microsoft", "Windows 2022 Standard Edition (64 bit)"),
}
# SoftLayer_Location::getDatacenters (a subset): name → long name.
# https://sldn.softlayer.com/reference/services/SoftLayer_Location/getDatacenters/
DATACENTERS = {
    "dal10": "Dallas 10", "dal12": "Dallas 12", "dal13": "Dallas 13",
    "wdc04": "Washington 4", "wdc06": "Washington 6", "wdc07": "Washington 7",
    "tor01": "Toronto 1", "sao01": "Sao Paulo 1", "lon04": "London 4", "lon06": "London 6",
    "fra02": "Frankfurt 2", "fra04": "Frankfurt 4", "fra05": "Frankfurt 5",
    "par01": "Paris 1", "ams03": "Amsterdam 3", "mad02": "Madrid 2", "syd01": "Sydney 1",
    "syd04": "Sydney 4", "tok02": "Tokyo 2", "tok04": "Tokyo 4", "osa21": "Osaka 21",
    "che01": "Chennai 1", "sng01": "Singapore 1",
}  # fmt: skip


def software_descriptions() -> list[dict[str, Any]]:
    """getVhdImportSoftwareDescriptions: SoftLayer_Software_Description records."""
    return [
        {"id": 5000 + i, "manufacturer": maker, "name": maker, "version": version,
         "referenceCode": code, "operatingSystem": 1, "longDescription": f"{maker} {version}"}
        for i, (code, (maker, version)) in enumerate(sorted(VHD_IMPORT_OS.items()))
    ]  # fmt: skip


def datacenters() -> list[dict[str, Any]]:
    """SoftLayer_Location::getDatacenters: SoftLayer_Location records."""
    return [
        {"id": 1000 + i, "name": name, "longName": long, "statusId": 2}
        for i, (name, long) in enumerate(sorted(DATACENTERS.items()))
    ]


class SoftLayerError(HttpError):
    """A SoftLayer API error: {"error", "code"}."""

    def response(self) -> Response:
        return Response(self.status, {"error": self.message, "code": self.code})


def invalid(name: str, value: object, rule: str) -> SoftLayerError:
    """A bad parameter, named with its value and the rule it breaks."""
    return SoftLayerError(
        400, "SoftLayer_Exception_Public", f"{name} {value!r} is invalid: {rule}."
    )


def not_found(service: str, object_id: object) -> SoftLayerError:
    """No such object."""
    return SoftLayerError(
        404,
        "SoftLayer_Exception_ObjectNotFound",
        f"Unable to find object with id of '{object_id}' ({service}).",
    )


@dataclass
class Template:
    """An image template group with one child (the boot disk image)."""

    id: int
    name: str
    note: str
    os_code: str
    encrypted: bool = False
    global_identifier: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: str = field(default_factory=now_iso)
    status: str = "ACTIVE"
    transaction_id: int | None = None
    done_at: float = 0.0
    pending_import: dict[str, Any] | None = None  # createFromIcos config, checked when done
    image: bytes | tuple[str, str] = b""  # the disk: bytes, or (bucket, key) in COS
    key: tuple[str, str] | None = None  # encrypted: (crkCrn, wrappedDek) it was imported with

    def to_json(self, mask: str) -> dict[str, Any]:
        """The template as getObject returns it (children only when the mask asks)."""
        data: dict[str, Any] = {
            "id": self.id,
            "globalIdentifier": self.global_identifier,
            "name": self.name,
            "note": self.note,
            "accountId": SOFTLAYER_ACCOUNT,
            "createDate": self.created,
            "status": {"keyName": self.status, "name": self.status.replace("_", " ").title()},
            "imageType": {"keyName": "SYSTEM", "name": "System"},
            "flexImageFlag": False,
            "encryptionAttributes": ["ENCRYPTED"] if self.encrypted else [],
        }
        if self.transaction_id is not None:
            data["transactionId"] = self.transaction_id
        if "children" in mask:
            child: dict[str, Any] = {"id": self.id + 1, "parentId": self.id, "name": self.name}
            if self.transaction_id is not None:
                child["transactionId"] = self.transaction_id
            data["children"] = [child]
        return data


@dataclass
class Guest:
    """A virtual server instance."""

    id: int
    order: dict[str, Any]
    provision_at: float
    global_identifier: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: str = field(default_factory=now_iso)
    provisioned: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The guest as getObject returns it (provisionDate once provisioned)."""
        if self.provisioned is None and time.monotonic() >= self.provision_at:
            self.provisioned = now_iso()
        order = self.order
        data: dict[str, Any] = {
            "id": self.id,
            "globalIdentifier": self.global_identifier,
            "hostname": order["hostname"],
            "domain": order["domain"],
            "fullyQualifiedDomainName": f"{order['hostname']}.{order['domain']}",
            "startCpus": order["startCpus"],
            "maxCpu": order["startCpus"],
            "maxMemory": order["maxMemory"],
            "hourlyBillingFlag": order["hourlyBillingFlag"],
            "localDiskFlag": order["localDiskFlag"],
            "accountId": SOFTLAYER_ACCOUNT,
            "createDate": self.created,
            "datacenter": {"name": order["datacenter"]["name"]},
            "blockDeviceTemplateGroup": order.get("blockDeviceTemplateGroup"),
            "status": {"keyName": "ACTIVE" if self.provisioned else "PROVISIONING"},
        }
        if self.provisioned:
            data["provisionDate"] = self.provisioned
        return data


class SoftLayerModel:
    """Templates and guests of the account; delays are seconds, short in tests."""

    import_seconds = 2.0
    export_seconds = 2.0
    provision_seconds = 3.0

    def __init__(self, iam: IamModel, kp: KeyProtectModel, cos: CosServer | None) -> None:
        self.iam, self.kp, self.cos = iam, kp, cos
        self.lock = threading.RLock()
        self._ids = itertools.count(SEED_TEMPLATE_ID + 100, 2)
        self._transactions = itertools.count(88000001)
        self.templates: dict[int, Template] = {}
        self.guests: dict[int, Guest] = {}
        seed = Template(
            SEED_TEMPLATE_ID,
            "byok-seed-ubuntu-22-04",
            "Seeded unencrypted cloud-init image",
            "UBUNTU_22_64",
            image=seed_image(),
        )
        self.templates[seed.id] = seed

    # -- authentication -------------------------------------------------------------------
    def api_key(self, value: object, name: str = "ibmApiKey") -> ApiKey:
        """The account's API key with this value."""
        key = self.iam.key_by_value(value) if isinstance(value, str) and value else None
        if key is None:
            raise invalid(name, "<redacted>", "not an API key of the account")
        return key

    # -- templates ------------------------------------------------------------------------
    def template(self, template_id: object) -> Template:
        """A template, its finished transaction settled."""
        with self.lock:
            template = self.templates.get(_int(template_id))
            if template is None:
                raise not_found("SoftLayer_Virtual_Guest_Block_Device_Template_Group", template_id)
            if template.transaction_id is not None and time.monotonic() >= template.done_at:
                self._settle(template)
            return template

    def create_from_icos(self, config: object) -> Template:
        """Start an import; the object, key and authorization are checked when it completes."""
        if not isinstance(config, dict):
            raise invalid("configuration", config, "an object (the template group's settings)")
        for name in ("name", "operatingSystemReferenceCode", "uri"):
            if not isinstance(config.get(name), str) or not config[name]:
                raise invalid(name, config.get(name), "a non-empty string is required")
        if not COS_URI.match(config["uri"]):
            raise invalid("uri", config["uri"], "expected cos://<region>/<bucket>/<object>")
        if config["operatingSystemReferenceCode"] not in VHD_IMPORT_OS:
            raise invalid(
                "operatingSystemReferenceCode",
                config["operatingSystemReferenceCode"],
                "not a reference code getVhdImportSoftwareDescriptions lists",
            )
        self.api_key(config.get("ibmApiKey"))
        encrypted = config.get("isEncrypted", False)
        for name in ("isEncrypted", "cloudInit", "byol"):
            if not isinstance(config.get(name, False), bool):
                raise invalid(name, config[name], "true or false")
        if encrypted:
            for name in ("crkCrn", "wrappedDek"):
                if not isinstance(config.get(name), str) or not config[name]:
                    raise invalid(name, config.get(name), "required when isEncrypted is true")
        with self.lock:
            template = Template(
                next(self._ids),
                config["name"],
                str(config.get("note") or ""),
                config["operatingSystemReferenceCode"],
                encrypted,
            )
            self._start(template, self.import_seconds)
            template.pending_import = dict(config)
            self.templates[template.id] = template
        return template

    def copy_to_icos(self, template_id: object, config: object) -> bool:
        """Export a template's disk to `<object stem>-0.vhd`; the template shows a transaction
        until the export is done."""
        template = self.template(template_id)
        if template.status != "ACTIVE" or template.transaction_id is not None:
            raise SoftLayerError(
                400,
                "SoftLayer_Exception_Public",
                f"Template {template.id} is busy or not active (status {template.status}).",
            )
        if template.encrypted:
            raise SoftLayerError(
                400,
                "SoftLayer_Exception_Public",
                f"Template {template.id} is encrypted: encrypted images cannot be exported.",
            )
        if not isinstance(config, dict) or not COS_URI.match(str(config.get("uri", ""))):
            uri = config.get("uri") if isinstance(config, dict) else config
            raise invalid("uri", uri, "expected cos://<region>/<bucket>/<object>")
        match = COS_URI.match(config["uri"])
        assert match is not None
        key = self.api_key(config.get("ibmApiKey"))
        error = self._bucket_error(key, match["region"], match["bucket"], WRITE_ROLES)
        if error:
            raise SoftLayerError(400, "SoftLayer_Exception_Public", error)
        stem = match["key"].removesuffix(".vhd")
        assert self.cos is not None
        if isinstance(template.image, bytes):
            self.cos.client.put_object(
                Bucket=match["bucket"], Key=f"{stem}-0.vhd", Body=template.image
            )
        else:
            bucket, source = template.image
            self.cos.client.copy_object(
                Bucket=match["bucket"],
                Key=f"{stem}-0.vhd",
                CopySource={"Bucket": bucket, "Key": source},
            )
        with self.lock:
            self._start(template, self.export_seconds)
        return True

    def _start(self, template: Template, seconds: float) -> None:
        template.transaction_id = next(self._transactions)
        template.done_at = time.monotonic() + seconds

    def _settle(self, template: Template) -> None:
        config, template.pending_import, template.transaction_id = (
            template.pending_import,
            None,
            None,
        )
        if config is None:
            return
        error = self._import_error(config)
        if error:
            template.status = "IMPORT_FAILED"
            template.note = (
                template.note + " " if template.note else ""
            ) + f"Import failed: {error}"
        else:
            match = COS_URI.match(config["uri"])
            assert match is not None
            template.image = (match["bucket"], match["key"])
            if config.get("isEncrypted"):
                template.key = (config["crkCrn"], config["wrappedDek"])

    def _bucket_error(self, key: ApiKey, region: str, bucket: str, roles: frozenset[str]) -> str:
        resource = self.iam.bucket(bucket)
        if not self.iam.has_access(key.iam_id, resource, roles):
            return (
                f"the ibmApiKey's identity {key.iam_id} has no access policy on "
                f"cloud-object-storage bucket {bucket!r}"
            )
        assert self.cos is not None
        try:
            location = self.cos.location(bucket)
        except ClientError:
            return f"COS bucket {bucket!r} does not exist"
        if not regional_location(location, region):
            return (
                f"COS bucket {bucket!r} has location {location!r}: the image must be in a "
                f"regional bucket in {region}"
            )
        return ""

    def _import_error(self, config: dict[str, Any]) -> str:
        """Why the import fails ('' when it succeeds). Never names key material."""
        match = COS_URI.match(config["uri"])
        assert match is not None and self.cos is not None
        key = self.iam.key_by_value(config["ibmApiKey"])
        if key is None:
            return "the ibmApiKey was deleted before the import ran"
        error = self._bucket_error(key, match["region"], match["bucket"], READ_ROLES)
        if error:
            return error
        try:
            with self.cos.open(match["bucket"], match["key"]) as handle:
                disk = read_disk(handle)
        except ClientError:
            return f"object {match['key']!r} does not exist in bucket {match['bucket']!r}"
        except NotAVhd as exc:
            return f"object {match['key']!r} is not a VHD: {exc}"
        if disk.virtual_size > MAX_IMAGE_SIZE:
            return f"the image's virtual size {disk.virtual_size} exceeds 100 GB"
        if not config.get("isEncrypted") and disk.keyhash:
            return "the image is encrypted (it has a keyhash) but isEncrypted is false"
        if not config.get("isEncrypted"):
            return ""
        if disk.creator_app != "tap" or disk.disk_type != "dynamic" or not disk.keyhash:
            return (
                f"object {match['key']!r} is not an encrypted tap-style VHD (vhd-util copy -k): "
                f"creator {disk.creator_app!r}, type {disk.disk_type}, keyhash "
                f"{'present' if disk.keyhash else 'absent'}"
            )
        try:
            dek = self.kp.unwrap_for_service(
                config["crkCrn"], config["wrappedDek"], "server-protect"
            )
        except ValueError as exc:
            return str(exc)
        if len(dek) not in (32, 64):
            return f"the unwrapped data encryption key is {len(dek)} bytes; expected 32 or 64"
        if not key_matches(disk, dek):
            return (
                "the data encryption key unwrapped from wrappedDek does not match the "
                "image's keyhash: the image was encrypted with another key"
            )
        return ""

    # -- guests -----------------------------------------------------------------------------
    def validate_order(self, order: object) -> dict[str, Any]:
        """Check a Virtual_Guest template (createObject / generateOrderTemplate)."""
        if not isinstance(order, dict):
            raise invalid("virtual guest template", order, "an object")
        for name in ("hostname", "domain"):
            if not isinstance(order.get(name), str) or not order[name]:
                raise invalid(name, order.get(name), "a non-empty string is required")
        for name, low in (("startCpus", 1), ("maxMemory", 1024)):
            if not isinstance(order.get(name), int) or order[name] < low:
                raise invalid(name, order.get(name), f"an integer of at least {low} is required")
        for name in ("hourlyBillingFlag", "localDiskFlag"):
            if not isinstance(order.get(name), bool):
                raise invalid(name, order.get(name), "true or false is required")
        datacenter = order.get("datacenter")
        if not isinstance(datacenter, dict) or not datacenter.get("name"):
            raise invalid("datacenter.name", datacenter, "a datacenter name (e.g. dal10)")
        if datacenter["name"] not in DATACENTERS:
            raise invalid(
                "datacenter.name", datacenter["name"], "not a datacenter getDatacenters lists"
            )
        group = order.get("blockDeviceTemplateGroup")
        gid = group.get("globalIdentifier") if isinstance(group, dict) else None
        if gid is None and not order.get("operatingSystemReferenceCode"):
            raise invalid(
                "blockDeviceTemplateGroup.globalIdentifier",
                gid,
                "an image template or operatingSystemReferenceCode is required",
            )
        if gid is not None:
            with self.lock:
                found = next(
                    (t for t in self.templates.values() if t.global_identifier == gid), None
                )
            if found is None:
                raise invalid("blockDeviceTemplateGroup.globalIdentifier", gid, "no such template")
            found = self.template(found.id)
            if found.status != "ACTIVE" or found.transaction_id is not None:
                raise invalid(
                    "blockDeviceTemplateGroup.globalIdentifier",
                    gid,
                    f"the template is not ready (status {found.status}, "
                    f"transaction {found.transaction_id})",
                )
            self._check_key(found, gid)
        return order

    def _check_key(self, template: Template, gid: str) -> None:
        """An encrypted template provisions only while server-protect can unwrap its DEK with
        the root key: a disabled (suspended) or deleted root key, or a removed authorization,
        makes the image unusable (IBM: "your data might not be accessible after disabling a
        root key", https://cloud.ibm.com/docs/key-protect?topic=key-protect-disable-keys; VPC
        reports such images `unusable` with reason `encryption_key_disabled`,
        https://cloud.ibm.com/docs/vpc?topic=vpc-image-encryption). Classic templates have no
        such status: the order is refused, naming the reason."""
        if template.key is None:
            return
        try:
            self.kp.unwrap_for_service(template.key[0], template.key[1], "server-protect")
        except ValueError as exc:
            raise invalid(
                "blockDeviceTemplateGroup.globalIdentifier",
                gid,
                f"the image is unusable (encryption_key_disabled): {exc}",
            ) from None

    def create_guest(self, order: object) -> Guest:
        """Order a virtual server; it is provisioned after `provision_seconds`."""
        valid = self.validate_order(order)
        with self.lock:
            guest = Guest(next(self._ids), valid, time.monotonic() + self.provision_seconds)
            self.guests[guest.id] = guest
        return guest

    def guest(self, guest_id: object) -> Guest:
        """A guest by id."""
        with self.lock:
            guest = self.guests.get(_int(guest_id))
        if guest is None:
            raise not_found("SoftLayer_Virtual_Guest", guest_id)
        return guest


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise invalid("id", value, "an integer object id") from None


def seed_image() -> bytes:
    """A small fixed VHD (cloud-init image stand-in) for the seeded template."""
    data = bytearray(SEED_IMAGE_SIZE)
    data[:32] = b"byok seed image (unencrypted)\n\0\0"
    return fixed_vhd(bytes(data))
