"""Bare metal servers (`/v1/bare_metal_servers`), as far as the custom-image rules need them:
an encrypted custom image cannot boot a bare metal server (its `allowed_use.bare_metal_server`
is "false"; IBM's custom-image restrictions list "can't be encrypted" beside "can't be used
with a bare metal profile": https://cloud.ibm.com/docs/vpc?topic=vpc-custom-image-cloud-
private-catalog). Shapes: https://cloud.ibm.com/apidocs/vpc/latest#create-bare-metal-server."""

from __future__ import annotations

from typing import Any

from emulator.services.vpc.errors import ImageNotUsable, InvalidField
from emulator.services.vpc.models import Instance, VpcModel, _required

BARE_METAL_PROFILES = ("bx2-metal-96x384", "cx2-metal-96x192")


def profiles(base: str) -> dict[str, Any]:
    """`GET /bare_metal_server/profiles` (the collection's main fields: first, limit,
    profiles, total_count; https://cloud.ibm.com/apidocs/vpc/latest#list-bare-metal-server-profiles)."""
    shown = [
        {
            "href": f"{base}/bare_metal_server/profiles/{name}",
            "name": name,
            "family": "balanced" if name.startswith("bx") else "compute",
            "resource_type": "bare_metal_server_profile",
            "cpu_architecture": {"type": "fixed", "value": "amd64"},
            "os_architecture": {"default": "amd64", "type": "enum", "values": ["amd64"]},
        }
        for name in BARE_METAL_PROFILES
    ]
    first = {"href": f"{base}/bare_metal_server/profiles"}
    return {"first": first, "limit": 50, "profiles": shown, "total_count": len(shown)}


class BareMetalServers:
    """The account's bare metal servers in the region (running once created)."""

    def __init__(self, vpc: VpcModel) -> None:
        self.vpc = vpc
        self.servers: dict[str, Instance] = {}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """A server booted from an available, unencrypted image on a subnet."""
        name = _required(body, "name")
        profile = _required(body, "profile.name")
        if profile not in BARE_METAL_PROFILES:
            raise InvalidField(f"profile.name {profile!r} is not a bare metal profile", "profile")
        zone = _required(body, "zone.name")
        subnet = self.vpc.get(
            self.vpc.subnets, _required(body, "primary_network_interface.subnet.id"), "Subnet"
        )
        if subnet.body["zone"]["name"] != zone:
            raise InvalidField("the subnet is not in the server's zone", "zone")
        image = self.vpc.image(_required(body, "initialization.image.id"))
        shown = self.vpc.image_json(image)
        if shown["status"] != "available":
            raise ImageNotUsable(f"Image {image.id} is {shown['status']}", "initialization.image")
        if shown["encryption"] != "none":
            raise InvalidField(
                f"initialization.image {image.id} is an encrypted custom image: encrypted "
                "images cannot be used with a bare metal profile",
                "initialization.image",
            )
        with self.vpc.lock:
            server = Instance(
                **self.vpc._new("bare_metal_server", "bare_metal_servers", name, self.servers)
            )
            server.status = "running"
            server.body = {
                "profile": {"name": profile},
                "zone": {"name": zone},
                "image": {"id": image.id, "name": image.name, "crn": image.crn},
                "primary_network_interface": {"subnet": {"id": subnet.id, "name": subnet.name}},
            }
            self.servers[server.id] = server
        return self.json(server.id)

    def json(self, server_id: str) -> dict[str, Any]:
        """A server as the API answers it."""
        server = self.vpc.get(self.servers, server_id, "Bare metal server")
        return self.vpc.resource_json(server, "bare_metal_server", status=server.status)
