"""The region's fixed catalog: operating systems, instance profiles and zones (a subset of
us-south; shapes from https://cloud.ibm.com/apidocs/vpc/latest#list-operating-systems and
#list-instance-profiles)."""

from __future__ import annotations

from typing import Any

ZONES = ("us-south-1", "us-south-2", "us-south-3")
MAX_IMAGE_BYTES = (
    250 * 1024**3
)  # custom image virtual size limit (vpc?topic=vpc-planning-custom-images)

_OS = (
    ("ubuntu-22-04-amd64", "Ubuntu Linux", "Canonical", "22.04 LTS Jammy Jellyfish"),
    ("ubuntu-24-04-amd64", "Ubuntu Linux", "Canonical", "24.04 LTS Noble Numbat"),
    ("debian-12-amd64", "Debian GNU/Linux", "Debian", "12.x Bookworm/Stable"),
    ("rhel-9-amd64", "Red Hat Enterprise Linux", "Red Hat", "9.x - Minimal Install"),
)
_PROFILES = (
    ("bx2-2x8", "balanced", 2, 8),
    ("cx2-2x4", "compute", 2, 4),
    ("mx2-2x16", "memory", 2, 16),
)


def operating_systems(base: str) -> dict[str, dict[str, Any]]:
    """Operating systems by name."""
    return {
        name: {
            "href": f"{base}/operating_systems/{name}",
            "name": name,
            "architecture": "amd64",
            "family": family,
            "vendor": vendor,
            "version": version,
            "display_name": f"{family} {version} (amd64)",
            "dedicated_host_only": False,
            "allow_user_image_creation": True,
            "user_data_format": "cloud_init",
        }
        for name, family, vendor, version in _OS
    }


def instance_profiles(base: str) -> dict[str, dict[str, Any]]:
    """Instance profiles by name."""
    return {
        name: {
            "href": f"{base}/instance/profiles/{name}",
            "name": name,
            "family": family,
            "resource_type": "instance_profile",
            "vcpu_architecture": {"type": "fixed", "value": "amd64"},
            "vcpu_count": {"type": "fixed", "value": vcpu},
            "memory": {"type": "fixed", "value": memory},
            "os_architecture": {"default": "amd64", "type": "enum", "values": ["amd64"]},
        }
        for name, family, vcpu, memory in _PROFILES
    }
