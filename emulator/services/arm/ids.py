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


GROUP_READ = "Microsoft.Resources/subscriptions/resourceGroups/read"
_SUBSCRIPTION_READS = {
    "": "Microsoft.Resources/subscriptions/read",
    "locations": "Microsoft.Resources/subscriptions/locations/read",
    "resourcegroups": GROUP_READ,
    "resources": "Microsoft.Resources/subscriptions/resources/read",
    "providers": "Microsoft.Resources/subscriptions/providers/read",
}
_SUBSCRIPTION_PATH = re.compile(r"(/subscriptions/[^/]+)(?:/([^/]+))?", re.IGNORECASE)
_PROVIDER_PATH = re.compile(r"(/subscriptions/[^/]+)/providers/[^/]+", re.IGNORECASE)
_MONITORS = ("operationstatuses", "operationresults")
_FEATURES = re.compile(
    r"(/subscriptions/[^/]+)/providers/Microsoft\.Features/(providers/[^/]+/)?features(/[^/]+)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ReadAction:
    """What a read needs: `action` at `scope`. With `filtered`, ARM answers with what the
    caller can read inside the subscription (its lists, the subscription itself, its
    providers, locations and operation monitors): any role in the subscription will do."""

    action: str
    scope: str
    filtered: bool = False


def read_action(method: str, path: str) -> ReadAction | None:
    """The RBAC action a GET or HEAD needs ('Microsoft.KeyVault/vaults/read' on the vault,
    'Microsoft.Resources/subscriptions/resourceGroups/read' on a group); None for another
    method or a path outside a subscription. Action names as Azure's resource provider
    operations list them (https://learn.microsoft.com/azure/role-based-access-control/
    permissions/management-and-governance#microsoftresources)."""
    if method not in ("GET", "HEAD"):
        return None
    path = "/" + path.strip("/")
    if match := _SUBSCRIPTION_PATH.fullmatch(path):
        action = _SUBSCRIPTION_READS.get((match[2] or "").lower())
        return ReadAction(action, match[1], filtered=True) if action else None
    if _GROUP.fullmatch(path):
        return ReadAction(GROUP_READ, path)
    if path.lower().endswith("/resources") and _GROUP.fullmatch(path[: -len("/resources")]):
        return ReadAction(
            "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
            path[: -len("/resources")],
        )
    if match := _PROVIDER_PATH.fullmatch(path):
        return ReadAction(_SUBSCRIPTION_READS["providers"], match[1], filtered=True)
    if match := _FEATURES.fullmatch(path):
        kind = "providers/features" if match[2] else "features"
        return ReadAction(f"Microsoft.Features/{kind}/read", match[1])
    try:
        rid = parse(path)
    except HttpError:
        return None
    action = f"{rid.full_type}/read"
    if action.lower() == "microsoft.authorization/permissions/read":
        # "Gets all permissions the caller has" (learn.microsoft.com/rest/api/authorization/
        # permissions): what the caller may do, an empty list when nothing
        return None
    if rid.types[0].lower() == "locations" and not rid.resource_group:
        # regional reads of a provider ('…/locations/deletedVaults', kubernetesVersions) are
        # subscription reads; anyone who can read in the subscription polls its operations
        filtered = rid.types[-1].lower() in _MONITORS
        return ReadAction(action, f"/subscriptions/{rid.subscription}", filtered)
    if rid.name:
        return ReadAction(action, rid.id())
    scope = rid.parent if len(rid.types) > 1 else rid.scope
    return ReadAction(action, scope, filtered=_SUBSCRIPTION_PATH.fullmatch(scope) is not None)


def resource_read_action(resource_type: str) -> str:
    """The action that reads a stored resource of `resource_type`."""
    if resource_type.lower() == "microsoft.resources/resourcegroups":
        return GROUP_READ
    return f"{resource_type}/read"
