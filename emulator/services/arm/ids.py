"""Parsing ARM resource ids."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emulator.http import HttpError


@dataclass(frozen=True)
class ResourceId:
    """The parts of a resource id (or of a collection path, when `name` is empty)."""

    scope: str  # the id of the parent scope: subscription, group or resource
    subscription: str
    resource_group: str | None
    namespace: str
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def full_type(self) -> str:
        """'Microsoft.Compute/galleries/images'."""
        return "/".join((self.namespace, *self.types))

    @property
    def name(self) -> str:
        """The last name segment ('' for a collection path)."""
        return self.names[-1] if len(self.names) == len(self.types) else ""

    @property
    def parent(self) -> str:
        """The id of the parent resource, or of the scope for a top-level resource."""
        if len(self.types) <= 1:
            return self.scope
        names = self.names[: len(self.types) - 1]  # a collection path has one name less
        segs = [x for pair in zip(self.types[:-1], names, strict=True) for x in pair]
        return f"{self.scope}/providers/{self.namespace}/" + "/".join(segs)

    def id(self) -> str:
        """The canonical id string."""
        segs = [x for pair in zip(self.types, self.names, strict=False) for x in pair]
        return f"{self.scope}/providers/{self.namespace}/" + "/".join(segs)


def subscription_of(path: str) -> str:
    """The subscription id in a '/subscriptions/{id}/…' path."""
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise HttpError(400, "InvalidResourceId", f"'{path}' is not a subscription path.")
    return parts[1]


def resource_group_of(path: str) -> str | None:
    """The resource group name in a path, if it has one."""
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[2].lower() == "resourcegroups":
        return parts[3]
    return None


def parse(path: str) -> ResourceId:
    """Split '/subscriptions/s/resourceGroups/g/providers/NS/t1/n1/t2' into its parts."""
    path = "/" + path.strip("/")
    scope, sep, rest = path.rpartition("/providers/")
    segments = [s for s in rest.split("/") if s]
    if not sep or not scope or len(segments) < 2:
        raise HttpError(400, "InvalidResourceId", f"'{path}' is not a valid resource id.")
    namespace, tail = segments[0], segments[1:]
    return ResourceId(
        scope=scope,
        subscription=subscription_of(scope),
        resource_group=resource_group_of(scope),
        namespace=namespace,
        types=tuple(tail[0::2]),
        names=tuple(tail[1::2]),
    )


_WRITE_VERBS = {"PUT": "write", "PATCH": "write", "DELETE": "delete"}
_GROUP = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+", re.IGNORECASE)
_FEATURE = re.compile(
    r"(/subscriptions/[^/]+)/providers/Microsoft\.Features/providers/[^/]+/features/[^/]+/"
    r"(register|unregister)",
    re.IGNORECASE,
)
_PROVIDER = re.compile(r"(/subscriptions/[^/]+)/providers/([^/]+)/(register|unregister)", re.I)


def write_action(method: str, path: str) -> tuple[str, str] | None:
    """The RBAC action and scope an ARM write needs ('Microsoft.Compute/diskEncryptionSets/
    write' on the set's id, 'Microsoft.KeyVault/vaults/accessPolicies/write', a POST action
    as '<type>/<action>/action'); None for a read or a path that names no resource."""
    path = "/" + path.strip("/")
    verb = _WRITE_VERBS.get(method)
    if verb and _GROUP.fullmatch(path):
        return f"Microsoft.Resources/subscriptions/resourceGroups/{verb}", path
    if method == "POST":
        if match := _FEATURE.fullmatch(path):
            return f"Microsoft.Features/providers/features/{match[2]}/action", match[1]
        if match := _PROVIDER.fullmatch(path):
            return f"{match[2]}/{match[3]}/action", match[1]
        parent, action = path.rsplit("/", 1)
        path, verb = parent, f"{action}/action"
    if not verb:
        return None
    try:
        rid = parse(path)
    except HttpError:
        return None
    return (f"{rid.full_type}/{verb}", rid.id()) if rid.name else None
