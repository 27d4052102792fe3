"""ARM state: subscriptions, resource groups, a generic resource store, long-running
operations, resource providers and preview features."""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from emulator.faults import Fault, FaultInjector
from emulator.http import HttpError
from emulator.services.arm import ids, locations
from emulator.services.entra.models import EntraModel, Principal

LroStyle = Literal["sync", "azure-async-operation", "location", "provisioning-state"]
RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"


def utc_now() -> str:
    """An ISO-8601 UTC timestamp as ARM writes them."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class PutContext:
    """What a type's hooks see when a resource is created or replaced."""

    arm: ArmModel
    rid: ids.ResourceId
    body: dict[str, Any]  # the request body
    existing: dict[str, Any] | None  # the stored resource, if any
    principal: Principal | None  # the caller
    method: str = "PUT"
    api_version: str = ""


class TypeHooks:
    """Per-type behaviour; the defaults give a plain tracked resource."""

    def validate(self, ctx: PutContext) -> None:
        """Reject a bad request before anything is written (raise HttpError)."""

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        """Add server-generated fields to the resource about to be stored."""

    def succeeded(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        """Called once the create/update operation has succeeded."""

    def deleted(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        """Called when the resource is deleted."""

    def refresh(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        """Apply what time changes by itself (automatic key rotation…) before a read."""

    def expand(self, resource: dict[str, Any], what: str) -> dict[str, Any]:
        """Extra properties a GET with `$expand=what` adds (e.g. ReplicationStatus)."""
        return {}

    def duration(self, arm: ArmModel, resource: dict[str, Any]) -> float:
        """Seconds the create/update operation takes (replication and the like)."""
        return 0.0

    def failure(self, arm: ArmModel, resource: dict[str, Any]) -> dict[str, str] | None:
        """An error ({code, message}) the operation ends with, or None."""
        return None


@dataclass
class TypeSpec:
    """How ARM serves one resource type."""

    type: str
    lro: LroStyle = "sync"
    create_status: int = 201  # initial status of a create (202 for async styles)
    update_status: int = 200
    patch_lro: LroStyle | None = None  # PATCH's style when it differs from PUT's
    pending_state: str | None = None  # provisioningState while in progress (default
    # Creating/Updating)
    delete_lro: LroStyle = "sync"
    tracked: bool = True  # requires a location
    hooks: TypeHooks = field(default_factory=TypeHooks)
    actions: dict[str, Callable[[ArmModel, dict[str, Any], dict[str, Any]], Any]] = field(
        default_factory=dict
    )

    def lro_for(self, method: str) -> LroStyle:
        """The long-running-operation style of a PUT or PATCH."""
        return self.patch_lro if method == "PATCH" and self.patch_lro else self.lro


@dataclass
class Operation:
    """A long-running operation; it completes lazily, when polled."""

    id: str
    kind: str  # "put" or "delete"
    resource_id: str
    namespace: str
    location: str
    polls_left: int
    ready_at: float
    fail: Fault | None
    status: str = "InProgress"
    start_time: str = field(default_factory=utc_now)
    end_time: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None  # a failure the resource's rules produced

    def status_body(self) -> dict[str, Any]:
        """The Azure-AsyncOperation status document."""
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.id,
            "status": self.status,
            "startTime": self.start_time,
        }
        if self.end_time:
            body["endTime"] = self.end_time
        if self.status == "Failed":
            body["error"] = self.error or failure_error(self.fail)
        return body


def failure_error(fault: Fault | None) -> dict[str, str]:
    """The error object of a failed operation."""
    return {
        "code": (fault.code if fault else None) or "InternalOperationError",
        "message": (fault.message if fault else None)
        or "The operation failed (injected by the emulator).",
    }


@dataclass
class Feature:
    """A preview feature's registration state and how the emulator moves it on."""

    namespace: str
    name: str
    behaviour: Literal["auto", "pending", "unknown"] = "auto"
    polls: int = 2
    seconds: float = 0.0
    state: str = "NotRegistered"
    polls_left: int = 0
    ready_at: float = 0.0

    def to_json(self, subscription: str) -> dict[str, Any]:
        """The feature as Microsoft.Features serves it."""
        return {
            "id": f"/subscriptions/{subscription}/providers/Microsoft.Features/providers/"
            f"{self.namespace}/features/{self.name}",
            "name": f"{self.namespace}/{self.name}",
            "type": "Microsoft.Features/providers/features",
            "properties": {"state": self.state},
        }


@dataclass
class Provider:
    """A resource provider's registration state for the subscription."""

    namespace: str
    state: str = "Registered"
    polls: int = 2
    seconds: float = 0.0
    polls_left: int = 0
    ready_at: float = 0.0


DEFAULT_NAMESPACES = (
    "Microsoft.Authorization",
    "Microsoft.Compute",
    "Microsoft.ContainerRegistry",
    "Microsoft.ContainerService",
    "Microsoft.Features",
    "Microsoft.KeyVault",
    "Microsoft.ManagedIdentity",
    "Microsoft.Network",
    "Microsoft.Resources",
)


@dataclass
class Subscription:
    """A subscription of a tenant, with its own provider and feature registrations."""

    subscription_id: str
    tenant_id: str
    display_name: str
    state: str = "Enabled"
    providers: dict[str, Provider] = field(default_factory=dict)  # by lower-case namespace
    features: dict[tuple[str, str], Feature] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The subscription as `GET /subscriptions/{id}` answers it."""
        return {
            "id": f"/subscriptions/{self.subscription_id}",
            "subscriptionId": self.subscription_id,
            "tenantId": self.tenant_id,
            "displayName": self.display_name,
            "state": self.state,
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
            "authorizationSource": "RoleBased",
        }


class ArmModel:
    """The management plane of every tenant's subscriptions. Resources are keyed by their
    id, which starts with their subscription's: one subscription never sees another's."""

    def __init__(self, entra: EntraModel, faults: FaultInjector, subscription_id: str) -> None:
        self.entra = entra
        self.faults = faults
        self.lock = threading.RLock()
        self.subscriptions: dict[str, Subscription] = {}
        self.default_subscription = self.add_subscription(
            subscription_id, entra.tenant_id, "byok emulator subscription"
        ).subscription_id
        self.resources: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, Operation] = {}
        self.types: dict[str, TypeSpec] = {}
        self.namespaces = {ns.lower(): ns for ns in DEFAULT_NAMESPACES}
        self.default_lro_polls = 1
        self.page_size = 100
        # Check ARM calls against role assignments (403 AuthorizationFailed, lists filtered to
        # what the caller can read); off by default.
        self.enforce_authorization = False

    def add_subscription(
        self,
        subscription_id: str | None = None,
        tenant_id: str | None = None,
        display_name: str = "",
    ) -> Subscription:
        """Add a subscription to a tenant (default: the home tenant)."""
        tenant = (tenant_id or self.entra.tenant_id).lower()
        if tenant not in self.entra.tenants:
            raise ValueError(f"tenant_id = {tenant_id}: not a tenant of the emulator")
        sub_id = (subscription_id or str(uuid.uuid4())).lower()
        sub = Subscription(
            sub_id, tenant, display_name or f"byok emulator subscription {len(self.subscriptions)}"
        )
        with self.lock:
            self.subscriptions[sub_id] = sub
        return sub

    # -- configuration -------------------------------------------------------------------
    def register_type(self, spec: TypeSpec) -> None:
        """Make a resource type servable."""
        self.types[spec.type.lower()] = spec
        namespace = spec.type.split("/")[0]
        self.namespaces.setdefault(namespace.lower(), namespace)

    def configure_feature(
        self,
        namespace: str,
        name: str,
        behaviour: str = "auto",
        polls: int = 2,
        seconds: float = 0.0,
        state: str = "NotRegistered",
        subscription_id: str | None = None,
    ) -> Feature:
        """Declare how a preview feature behaves in a subscription (default: the default
        one): 'auto' registers after `polls` polls and `seconds` seconds, 'pending' waits for
        an approval that never comes, 'unknown' is not found (a feature that went GA)."""
        feature = Feature(namespace, name, behaviour, polls, seconds, state)  # type: ignore[arg-type]
        with self.lock:
            sub = self.subscription(subscription_id or self.default_subscription)
            sub.features[(namespace.lower(), name.lower())] = feature
        return feature

    def configure_provider(
        self,
        namespace: str,
        state: str = "NotRegistered",
        polls: int = 2,
        seconds: float = 0.0,
        subscription_id: str | None = None,
    ) -> Provider:
        """Set a provider's registration state in a subscription (default: the default
        one) and how long registering takes."""
        provider = Provider(namespace, state, polls, seconds)
        with self.lock:
            self.namespaces.setdefault(namespace.lower(), namespace)
            sub = self.subscription(subscription_id or self.default_subscription)
            sub.providers[namespace.lower()] = provider
        return provider

    # -- subscriptions and lookups ---------------------------------------------------------
    def subscription(self, subscription_id: str) -> Subscription:
        """The subscription, or 404 SubscriptionNotFound (the message ARM gives, e.g.
        https://github.com/Azure/azure-cli/issues/33657)."""
        sub = self.subscriptions.get(subscription_id.lower())
        if sub is None:
            raise HttpError(
                404,
                "SubscriptionNotFound",
                f"The subscription '{subscription_id}' could not be found.",
            )
        return sub

    def get(self, resource_id: str) -> dict[str, Any] | None:
        """The stored resource (advancing its pending operation), or None."""
        with self.lock:
            resource = self.resources.get(resource_id.lower())
            if resource is None:
                return None
            self._observe(resource)
            return self.resources.get(resource_id.lower())

    def _observe(self, resource: dict[str, Any]) -> None:
        """Advance what a read observes: the pending operation, time-driven changes."""
        op_id = resource.get("_operation")
        if op_id:
            self.advance(self.operations[op_id])
        spec = self.types.get(resource["type"].lower())
        if spec and not resource.get("_operation"):
            spec.hooks.refresh(self, resource)

    def require(self, resource_id: str) -> dict[str, Any]:
        """The stored resource or ARM's 404."""
        resource = self.get(resource_id)
        if resource is None:
            try:
                rid = ids.parse(resource_id)
                what = f"Resource '{rid.full_type}/{'/'.join(rid.names)}'"
            except HttpError:
                what = f"Resource '{resource_id}'"
            raise HttpError(
                404,
                "ResourceNotFound",
                f"{what} under resource group '{ids.resource_group_of(resource_id)}' "
                "was not found.",
            )
        return resource

    def children(self, parent_scope: str, full_type: str) -> list[dict[str, Any]]:
        """Resources of `full_type` directly below `parent_scope` (a resource group, a
        subscription for tracked types listed subscription-wide, or a parent resource)."""
        prefix = parent_scope.lower().rstrip("/") + "/"
        wanted = full_type.lower()
        with self.lock:
            found = [
                r
                for key, r in self.resources.items()
                if key.startswith(prefix) and r.get("type", "").lower() == wanted
            ]
            for resource in found:
                self._observe(resource)
        return sorted(found, key=lambda r: r["id"].lower())

    # -- resource groups -------------------------------------------------------------------
    def put_resource_group(self, sub: str, name: str, body: dict[str, Any]) -> tuple[int, dict]:
        """Create or update a resource group (synchronous)."""
        self.subscription(sub)
        if not body.get("location"):
            raise HttpError(400, "LocationRequired", "The location property is required.")
        location = locations.check_location(body["location"], None)
        rg_id = f"/subscriptions/{sub}/resourceGroups/{name}"
        with self.lock:
            existing = self.resources.get(rg_id.lower())
            if existing and existing["location"] != location:
                raise HttpError(
                    409,
                    "InvalidResourceGroupLocation",
                    f"Invalid resource group location '{body['location']}'. The Resource group "
                    f"already exists in location '{existing['location']}'.",
                )
            group = {
                "id": existing["id"] if existing else rg_id,
                "name": existing["name"] if existing else name,
                "type": RESOURCE_GROUP_TYPE,
                "location": location,
                "tags": body.get("tags") or {},
                "properties": {"provisioningState": "Succeeded"},
            }
            self.resources[rg_id.lower()] = group
        return (200 if existing else 201), public(group)

    def delete_resource_group(self, sub: str, name: str) -> Operation | None:
        """Delete a group and everything in it (a Location-style operation)."""
        rg_id = f"/subscriptions/{sub}/resourceGroups/{name}"
        group = self.get(rg_id)
        if group is None:
            return None
        with self.lock:
            group["properties"]["provisioningState"] = "Deleting"
            return self._start_operation(
                "delete",
                group["id"],
                "Microsoft.Resources",
                group["location"],
                "DELETE",
                group["id"],
            )

    def resource_group(self, resource_id: str) -> dict[str, Any]:
        """The group a resource id lives in, or 404 ResourceGroupNotFound."""
        sub = ids.subscription_of(resource_id)
        self.subscription(sub)
        name = ids.resource_group_of(resource_id)
        group = self.get(f"/subscriptions/{sub}/resourceGroups/{name}") if name else None
        if group is None:
            raise HttpError(
                404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."
            )
        return group

    # -- generic resources -----------------------------------------------------------------
    def spec_for(self, rid: ids.ResourceId) -> TypeSpec:
        """The type's spec, or ARM's error for an unknown type."""
        spec = self.types.get(rid.full_type.lower())
        if spec is None:
            raise HttpError(
                400,
                "InvalidResourceType",
                f"The resource type '{'/'.join(rid.types)}' could not be found in the namespace "
                f"'{rid.namespace}' (the emulator does not serve it).",
            )
        return spec

    def check_provider(self, namespace: str, subscription_id: str) -> None:
        """409 MissingSubscriptionRegistration when the provider is not registered."""
        provider = self.provider(namespace, subscription_id)
        if provider.state != "Registered":
            raise HttpError(
                409,
                "MissingSubscriptionRegistration",
                f"The subscription is not registered to use namespace '{provider.namespace}'. "
                "See https://aka.ms/rps-not-found for how to register subscriptions.",
            )

    def put(
        self,
        path: str,
        body: dict[str, Any],
        principal: Principal | None,
        method: str = "PUT",
        api_version: str = "",
    ) -> tuple[int, dict[str, Any], Operation | None]:
        """Create or replace (PUT) or update (PATCH) a resource."""
        rid = ids.parse(path)
        self.resource_group(path) if rid.resource_group else self.subscription(rid.subscription)
        spec = self.spec_for(rid)
        self.check_provider(rid.namespace, rid.subscription)
        with self.lock:
            existing = self.get(rid.id())
            if method == "PATCH":
                if existing is None:
                    self.require(rid.id())
                body = merge_patch(public(existing or {}), body)
            if len(rid.types) > 1 and self.get(rid.parent) is None:
                self.require(rid.parent)
            if existing and existing.get("_operation"):
                raise HttpError(
                    409,
                    "AnotherOperationInProgress",
                    f"Another operation on '{rid.name}' is in progress; retry after it completes.",
                )
            ctx = PutContext(self, rid, body, existing, principal, method, api_version)
            if spec.tracked and not (body.get("location") or (existing or {}).get("location")):
                raise HttpError(400, "LocationRequired", "The location property is required.")
            if spec.tracked and body.get("location"):
                locations.check_location(body["location"], spec.type)
            spec.hooks.validate(ctx)
            resource = self._materialize(ctx, spec)
            spec.hooks.build(ctx, resource)
            self.resources[rid.id().lower()] = resource
            style = spec.lro_for(method)
            if style == "sync":
                resource.setdefault("properties", {})["provisioningState"] = "Succeeded"
                spec.hooks.succeeded(self, resource)
                return (
                    (spec.update_status if existing else spec.create_status),
                    public(resource),
                    None,
                )
            resource.setdefault("properties", {})["provisioningState"] = spec.pending_state or (
                "Updating" if existing else "Creating"
            )
            op = self._start_operation(
                "put",
                resource["id"],
                rid.namespace,
                resource.get("location", "global"),
                method,
                path,
            )
            status = spec.update_status if existing else spec.create_status
            return status, public(resource), op

    def _materialize(self, ctx: PutContext, spec: TypeSpec) -> dict[str, Any]:
        existing = ctx.existing or {}
        body = copy.deepcopy(ctx.body)
        resource: dict[str, Any] = {
            "id": existing.get("id") or ctx.rid.id(),
            "name": existing.get("name") or ctx.rid.name,
            "type": spec.type,
        }
        if spec.tracked:
            resource["location"] = locations.normalize(body.get("location") or existing["location"])
            resource["tags"] = body.get("tags") or {}
        for key in ("sku", "kind", "zones", "plan", "extendedLocation"):
            if key in body:
                resource[key] = body[key]
        resource["properties"] = body.get("properties") or {}
        if "identity" in body or "identity" in existing:
            resource["identity"] = self._identity(
                body.get("identity"),
                existing.get("identity"),
                resource["name"],
                self.subscription(ctx.rid.subscription).tenant_id,
            )
        resource["systemData"] = {
            "createdAt": existing.get("systemData", {}).get("createdAt", utc_now()),
            "lastModifiedAt": utc_now(),
        }
        return resource

    def _identity(
        self,
        wanted: dict[str, Any] | None,
        current: dict[str, Any] | None,
        name: str,
        tenant_id: str,
    ) -> dict[str, Any]:
        """Resolve a resource's managed identities: a system-assigned principal is created
        (kept across updates); user-assigned ones must exist and their ids are filled in."""
        wanted = wanted if wanted is not None else (current or {"type": "None"})
        kind = wanted.get("type") or "None"
        kinds = {k.strip().lower() for k in kind.split(",")}
        if not kinds <= {"none", "systemassigned", "userassigned"}:
            raise HttpError(400, "InvalidIdentityType", f"Identity type '{kind}' is not valid.")
        identity: dict[str, Any] = {"type": kind}
        if "systemassigned" in kinds:
            if current and current.get("principalId"):
                identity["principalId"] = current["principalId"]
            else:
                identity["principalId"] = self.entra.add_managed_identity(name, tenant_id).object_id
            identity["tenantId"] = tenant_id
        if "userassigned" in kinds:
            resolved = {}
            for uid in wanted.get("userAssignedIdentities") or {}:
                uai = self.get(uid)
                if uai is None or uai["type"].lower() != USER_ASSIGNED_IDENTITY_TYPE.lower():
                    raise HttpError(
                        400,
                        "InvalidUserAssignedIdentity",
                        f"The user-assigned identity '{uid}' was not found.",
                    )
                resolved[uai["id"]] = {
                    "principalId": uai["properties"]["principalId"],
                    "clientId": uai["properties"]["clientId"],
                }
            if not resolved:
                raise HttpError(
                    400,
                    "InvalidIdentity",
                    "Identity type UserAssigned needs at least one userAssignedIdentities entry.",
                )
            identity["userAssignedIdentities"] = resolved
        return identity

    def delete(self, path: str) -> tuple[int, Operation | None]:
        """Delete a resource and its children; 204 when it did not exist."""
        rid = ids.parse(path)
        self.subscription(rid.subscription)
        spec = self.spec_for(rid)
        with self.lock:
            resource = self.get(rid.id())
            if resource is None:
                return 204, None
            if spec.delete_lro == "sync":
                self._remove(resource)
                return 200, None
            resource["properties"]["provisioningState"] = "Deleting"
            op = self._start_operation(
                "delete",
                resource["id"],
                rid.namespace,
                resource.get("location", "global"),
                "DELETE",
                path,
            )
            return 202, op

    def _remove(self, resource: dict[str, Any]) -> None:
        prefix = resource["id"].lower() + "/"
        for key in [k for k in self.resources if k.startswith(prefix)] + [resource["id"].lower()]:
            gone = self.resources.pop(key, None)
            if gone is None:
                continue
            spec = self.types.get(gone["type"].lower())
            if spec:
                spec.hooks.deleted(self, gone)

    def action(self, path: str, action: str, body: dict[str, Any]) -> Any:
        """Run a POST action on a resource ('listKeys' and the like)."""
        rid = ids.parse(path)
        spec = self.spec_for(rid)
        resource = self.require(rid.id())
        handler = spec.actions.get(action.lower())
        if handler is None:
            raise HttpError(
                400,
                "UnsupportedOperation",
                f"The emulator does not support the action '{action}' on '{spec.type}'.",
            )
        return handler(self, resource, body)

    # -- long-running operations -----------------------------------------------------------
    def _start_operation(
        self, kind: str, resource_id: str, namespace: str, location: str, method: str, path: str
    ) -> Operation:
        fail = self.faults.take("lro-failed", method, path)
        slow = self.faults.take("lro-slow", method, path)
        op = Operation(
            id=str(uuid.uuid4()),
            kind=kind,
            resource_id=resource_id,
            namespace=namespace,
            location=location,
            polls_left=slow.polls if slow else self.default_lro_polls,
            ready_at=time.monotonic() + (slow.seconds if slow else 0.0),
            fail=fail,
        )
        resource = self.resources.get(resource_id.lower())
        spec = self.types.get(resource["type"].lower()) if resource else None
        if resource is not None and spec is not None and kind == "put":
            op.ready_at = max(op.ready_at, time.monotonic() + spec.hooks.duration(self, resource))
        self.operations[op.id] = op
        if resource is not None:
            resource["_operation"] = op.id
        return op

    def operation(self, op_id: str) -> Operation:
        """An operation, advanced by this poll."""
        with self.lock:
            op = self.operations.get(op_id)
            if op is None:
                raise HttpError(404, "OperationNotFound", f"Operation '{op_id}' was not found.")
            self.advance(op)
            return op

    def advance(self, op: Operation) -> None:
        """Count a poll; finish the operation when its polls and time are up."""
        if op.status != "InProgress":
            return
        op.polls_left -= 1
        if op.polls_left > 0 or time.monotonic() < op.ready_at:
            return
        op.end_time = utc_now()
        resource = self.resources.get(op.resource_id.lower())
        if resource is not None:
            resource.pop("_operation", None)
        spec = self.types.get(resource["type"].lower()) if resource else None
        error = (
            spec.hooks.failure(self, resource) if spec and resource and op.kind == "put" else None
        )
        if op.fail is not None or error is not None:
            op.status = "Failed"
            op.error = error
            if resource is not None:
                resource["properties"]["provisioningState"] = "Failed"
            return
        op.status = "Succeeded"
        if resource is None:
            return
        if op.kind == "delete":
            self._remove(resource)
            return
        resource["properties"]["provisioningState"] = "Succeeded"
        spec = self.types.get(resource["type"].lower())
        if spec:
            spec.hooks.succeeded(self, resource)
        op.result = public(resource)

    # -- providers and features ----------------------------------------------------------------
    def provider(self, namespace: str, subscription_id: str | None = None) -> Provider:
        """A provider of a subscription (default: the default one), advanced if it is
        registering; 404 for an unknown namespace."""
        with self.lock:
            sub = self.subscription(subscription_id or self.default_subscription)
            provider = sub.providers.get(namespace.lower())
            if provider is None:
                canonical = self.namespaces.get(namespace.lower())
                if canonical is None:
                    raise HttpError(
                        404,
                        "InvalidResourceNamespace",
                        f"The resource namespace '{namespace}' is invalid.",
                    )
                provider = sub.providers[namespace.lower()] = Provider(canonical)
            if provider.state == "Registering":
                provider.polls_left -= 1
                if provider.polls_left <= 0 and time.monotonic() >= provider.ready_at:
                    provider.state = "Registered"
            return provider

    def register_provider(self, namespace: str, subscription_id: str) -> Provider:
        """Start registering a provider (no-op when registered)."""
        with self.lock:
            provider = self.provider(namespace, subscription_id)
            if provider.state != "Registered":
                provider.state = "Registering"
                provider.polls_left = provider.polls
                provider.ready_at = time.monotonic() + provider.seconds
            return provider

    def features_of(self, subscription_id: str) -> list[Feature]:
        """The features a subscription knows (configured, not gone GA)."""
        with self.lock:
            sub = self.subscription(subscription_id)
            return [f for f in sub.features.values() if f.behaviour != "unknown"]

    def feature(self, namespace: str, name: str, subscription_id: str | None = None) -> Feature:
        """A feature of a subscription (default: the default one), advanced if it is
        registering; 404 FeatureNotFound if unknown."""
        with self.lock:
            sub = self.subscription(subscription_id or self.default_subscription)
            feature = sub.features.get((namespace.lower(), name.lower()))
            if feature is None or feature.behaviour == "unknown":
                raise HttpError(
                    404,
                    "FeatureNotFound",
                    f"The feature '{name}' could not be found in namespace '{namespace}'.",
                )
            if feature.state == "Registering":
                feature.polls_left -= 1
                if feature.polls_left <= 0 and time.monotonic() >= feature.ready_at:
                    feature.state = "Registered"
            return feature

    def register_feature(self, namespace: str, name: str, subscription_id: str) -> Feature:
        """Ask for a feature: 'auto' ones start Registering, 'pending' ones wait for approval."""
        with self.lock:
            feature = self.feature(namespace, name, subscription_id)
            if feature.state in ("NotRegistered", "Unregistered"):
                if feature.behaviour == "pending":
                    feature.state = "Pending"
                else:
                    feature.state = "Registering"
                    feature.polls_left = feature.polls
                    feature.ready_at = time.monotonic() + feature.seconds
            return feature

    def unregister_feature(self, namespace: str, name: str, subscription_id: str) -> Feature:
        """Withdraw a feature registration."""
        with self.lock:
            feature = self.feature(namespace, name, subscription_id)
            feature.state = "Unregistered"
            return feature


USER_ASSIGNED_IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"


def public(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as clients see it: a copy without the emulator's private keys."""
    return {k: copy.deepcopy(v) for k, v in resource.items() if not k.startswith("_")}


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = value
    return result
