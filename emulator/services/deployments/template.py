"""Running an ARM template: parameters bound, resources deployed in dependsOn order, each
resource's expressions evaluated right before it is deployed (so reference() sees what was
deployed before it), outputs evaluated last. Pure code: the caller deploys and reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulator.services.deployments.expressions import (
    ExpressionContext,
    TemplateError,
    evaluate,
    resource_id,
)

# deploy(resource id, api version, body without type/name/apiVersion/dependsOn)
Deploy = Callable[[str, str, dict[str, Any]], None]
META = frozenset({"type", "name", "apiversion", "dependson", "condition", "comments"})


class ResourceFailed(Exception):
    """One resource could not be deployed; `code` and `message` are the provider's error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"({code}) {message}")
        self.code, self.message = code, message


@dataclass
class TemplateRun:
    """The outcome: resources deployed in order, failures by resource id, the outputs."""

    deployed: list[str]
    failed: dict[str, ResourceFailed]
    outputs: dict[str, Any]


def bind_parameters(template: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Parameter values: the given `{"name": {"value": v}}` or the declared default."""
    declared = {k.lower(): (k, v or {}) for k, v in (template.get("parameters") or {}).items()}
    unknown = sorted(k for k in given if k.lower() not in declared)
    if unknown:
        raise TemplateError(
            f"The template parameters '{', '.join(unknown)}' are not valid; they are not "
            "present in the original template.",
            "InvalidTemplateDeployment",
        )
    values: dict[str, Any] = {}
    supplied = {k.lower(): v for k, v in given.items()}
    for lower, (name, spec) in declared.items():
        if lower in supplied:
            values[name] = (supplied[lower] or {}).get("value")
        elif "defaultValue" in spec:
            values[name] = spec["defaultValue"]
        else:
            raise TemplateError(
                f"The value for the template parameter '{name}' is not provided.",
                "InvalidTemplateDeployment",
            )
    return values


def own_id(resource: dict[str, Any], ctx: ExpressionContext) -> str:
    """The id of a template resource from its type and name ('vault/add' for child types)."""
    full_type, name = evaluate(resource.get("type"), ctx), evaluate(resource.get("name"), ctx)
    if not full_type or not name:
        raise TemplateError("Every template resource needs a type and a name.")
    return resource_id(
        ctx.subscription["subscriptionId"],
        ctx.resource_group["name"],
        [full_type, *str(name).split("/")],
    )


Planned = tuple[str, dict[str, Any], set[str]]  # id, template resource, ids it depends on


def order(resources: list[dict[str, Any]], ctx: ExpressionContext) -> list[Planned]:
    """The resources with their ids and dependencies, each after everything it dependsOn
    (template order otherwise); an unknown dependency or a cycle is an InvalidTemplate."""
    with_ids = [(own_id(r, ctx), r) for r in resources]
    by_id = {rid.lower(): rid for rid, _ in with_ids}
    needs: dict[str, set[str]] = {}
    for rid, resource in with_ids:
        wanted = set()
        for dep in evaluate(resource.get("dependsOn") or [], ctx):
            match = by_id.get(str(dep).lower()) or next(
                (i for low, i in by_id.items() if low.endswith("/" + str(dep).lower())), None
            )
            if match is None:
                raise TemplateError(
                    f"The resource '{dep}' is not defined in the template.", "InvalidTemplate"
                )
            wanted.add(match.lower())
        needs[rid.lower()] = wanted
    done: list[Planned] = []
    seen: set[str] = set()
    while len(done) < len(with_ids):
        ready = [
            (rid, r, needs[rid.lower()])
            for rid, r in with_ids
            if rid.lower() not in seen and needs[rid.lower()] <= seen
        ]
        if not ready:
            raise TemplateError("Circular dependency detected among the template resources.")
        done.append(ready[0])
        seen.add(ready[0][0].lower())
    return done


def run_template(
    template: dict[str, Any],
    parameters: dict[str, Any],
    ctx_factory: Callable[[dict[str, Any], dict[str, Any]], ExpressionContext],
    deploy: Deploy,
) -> TemplateRun:
    """Bind parameters and deploy every resource in order; like ARM, a failed resource only
    stops the resources that depend on it. Outputs are evaluated when nothing failed."""
    if not isinstance(template.get("resources"), list):
        raise TemplateError("The template has no 'resources' array.")
    ctx = ctx_factory(bind_parameters(template, parameters), template.get("variables") or {})
    deployed: list[str] = []
    failed: dict[str, ResourceFailed] = {}
    for rid, resource, needs in order(template["resources"], ctx):
        blocked = next((f for d, f in failed.items() if d.lower() in needs), None)
        if blocked is not None:
            failed[rid] = blocked
            continue
        try:
            body = {k: evaluate(v, ctx) for k, v in resource.items() if k.lower() not in META}
            deploy(rid, str(resource.get("apiVersion") or ""), body)
            deployed.append(rid)
        except TemplateError as exc:
            failed[rid] = ResourceFailed(exc.code, str(exc))
        except ResourceFailed as exc:
            failed[rid] = exc
    outputs = (
        {}
        if failed
        else {
            name: {"type": spec.get("type", "String"), "value": evaluate(spec.get("value"), ctx)}
            for name, spec in (template.get("outputs") or {}).items()
        }
    )
    return TemplateRun(deployed, failed, outputs)
