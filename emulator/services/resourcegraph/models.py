"""Resource Graph state: the per-user query quota, and queries over the ARM model.

What Azure does (learn.microsoft.com/azure/governance/resource-graph/concepts/
guidance-for-throttled-requests): each user gets 15 queries per 5-second window; every
answer says how many are left (`x-ms-user-quota-remaining`) and when the window resets
(`x-ms-user-quota-resets-after`, hh:mm:ss); past the quota the answer is 429. Rows have
ARM's shape with `type` and `resourceGroup` lower-cased, plus `subscriptionId`,
`resourceGroup` and `tenantId` columns; pages hold at most 1000 rows (`$top`), continued by
`$skipToken`. Rows are only the resources the caller can read ("Permissions in Azure
Resource Graph", learn.microsoft.com/azure/governance/resource-graph/overview). A VM's row
carries its power state in `properties.extended.instanceView.powerState` (`code`:
`PowerState/deallocated`, …: "Count of virtual machines by power state",
learn.microsoft.com/azure/virtual-machines/resource-graph-samples)."""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from collections import deque
from typing import Any

from emulator.http import HttpError
from emulator.services.arm.models import ArmModel
from emulator.services.authorization.models import readable
from emulator.services.entra.models import Principal
from emulator.services.resourcegraph.kql import KqlError, parse

MAX_TOP = 1000
# Types Resource Graph keeps in other tables (authorizationresources, resourcecontainers…)
# or not at all (Key Vault keys).
VM_TYPE = "microsoft.compute/virtualmachines"
_ELSEWHERE = ("microsoft.authorization/", "microsoft.resources/", "microsoft.keyvault/vaults/")


class ResourceGraphModel:
    """Queries and quotas; `quota` and `window_seconds` may be changed by tests."""

    def __init__(self, arm: ArmModel, quota: int = 15, window_seconds: float = 5.0) -> None:
        self.arm = arm
        self.quota, self.window_seconds = quota, window_seconds
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take_quota(self, principal: Principal) -> tuple[int, float]:
        """Count one query of the principal: (remaining, seconds until the window resets),
        or 429 with Retry-After when the quota is spent."""
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(principal.object_id, deque())
            while calls and now - calls[0] >= self.window_seconds:
                calls.popleft()
            resets = self.window_seconds - (now - calls[0]) if calls else self.window_seconds
            if len(calls) >= self.quota:
                raise HttpError(
                    429,
                    "RateLimiting",
                    "Please provide below info when asking for support: the request was "
                    f"throttled; the quota of {self.quota} queries per "
                    f"{self.window_seconds:g} seconds is used.",
                    headers={
                        "Retry-After": str(max(1, round(resets))),
                        **quota_headers(0, resets),
                    },
                )
            calls.append(now)
            return self.quota - len(calls), resets

    def query(
        self,
        principal: Principal,
        subscriptions: list[str] | None,
        text: str,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """One page of the query's rows over the principal's visible subscriptions."""
        try:
            query = parse(text)
        except KqlError as exc:
            raise HttpError(
                400, "BadRequest", f"Query is invalid: {exc}", inner="InvalidQuery"
            ) from exc
        visible = {
            sub_id
            for sub_id, sub in self.arm.subscriptions.items()
            if sub.tenant_id == principal.tenant_id
        }
        wanted = {s.lower() for s in subscriptions} & visible if subscriptions else visible
        found = readable(self.arm, principal.object_id, self._resources(wanted))
        rows = query.run([self._row(r) for r in found])
        top = min(int(options.get("$top") or 100), MAX_TOP)
        start = int(options.get("$skip") or 0)
        if options.get("$skipToken"):
            start = json.loads(base64.b64decode(options["$skipToken"]))["offset"]
        # the query reads the resources as they are; only the page's rows are copied out
        # (copying every resource first: a page over 6,660 resources 0.10 s instead of 0.03)
        page = copy.deepcopy(rows[start : start + top])
        body: dict[str, Any] = {
            "totalRecords": len(rows),
            "count": len(page),
            "data": page,
            "facets": [],
            "resultTruncated": "false",
        }
        if start + top < len(rows):
            token = json.dumps({"offset": start + top}).encode()
            body["$skipToken"] = base64.b64encode(token).decode()
        return body

    def _resources(self, subscriptions: set[str]) -> list[dict[str, Any]]:
        with self.arm.lock:
            keys = [
                key
                for key, r in self.arm.resources.items()
                if key.split("/")[2] in subscriptions
                and "/providers/" in key
                and not r["type"].lower().startswith(_ELSEWHERE)
            ]
        found = [self.arm.get(key) for key in sorted(keys)]
        return [r for r in found if r is not None]

    def _row(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource's row, sharing the resource's values (not a copy): its public
        fields (the emulator's own start with '_')."""
        body = resource
        if body["type"].lower() == VM_TYPE:
            body = {
                **body,
                "properties": {**body.get("properties", {}), "extended": self._extended(resource)},
            }
        parts = body["id"].split("/")
        sub = self.arm.subscriptions.get(parts[2].lower())
        return {
            "id": body["id"],
            "name": body.get("name"),
            "type": body["type"].lower(),
            "tenantId": sub.tenant_id if sub else "",
            "kind": body.get("kind", ""),
            "location": body.get("location", ""),
            "resourceGroup": parts[4].lower() if len(parts) > 4 else "",
            "subscriptionId": parts[2],
            "managedBy": body.get("managedBy", ""),
            "sku": body.get("sku"),
            "plan": body.get("plan"),
            "properties": body.get("properties", {}),
            "tags": body.get("tags", {}),
            "identity": body.get("identity"),
            "zones": body.get("zones"),
            "extendedLocation": body.get("extendedLocation"),
        }

    def _extended(self, vm: dict[str, Any]) -> dict[str, Any]:
        """A VM's `extended` column: the power state status of its instance view."""
        view = self.arm.types[VM_TYPE].hooks.expand(vm, "instanceView").get("instanceView") or {}
        power = [s for s in view.get("statuses") or [] if s["code"].startswith("PowerState/")]
        state = {k: power[0][k] for k in ("code", "level", "displayStatus")} if power else {}
        return {"instanceView": {"powerState": state}}


def quota_headers(remaining: int, resets_after: float) -> dict[str, str]:
    """The quota headers every answer carries."""
    seconds = max(0, round(resets_after))
    return {
        "x-ms-user-quota-remaining": str(remaining),
        "x-ms-user-quota-resets-after": time.strftime("%H:%M:%S", time.gmtime(seconds)),
    }
