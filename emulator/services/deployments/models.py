"""Microsoft.Resources/deployments at resource-group scope: a template deployment runs when
it is put (Incremental mode), and its operation ends Failed when a resource failed, as ARM's
deployments do (201 + Azure-AsyncOperation)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from emulator.http import HttpError, Response
from emulator.services.arm import ids, locations
from emulator.services.arm.models import (
    ArmModel,
    PutContext,
    TypeHooks,
    TypeSpec,
    failure_error,
    public,
    utc_now,
)
from emulator.services.deployments.expressions import ExpressionContext, TemplateError, evaluate
from emulator.services.deployments.template import (
    META,
    ResourceFailed,
    bind_parameters,
    order,
    run_template,
)
from emulator.services.keyvault.models import update_access_policies

DEPLOYMENT_TYPE = "Microsoft.Resources/deployments"
ACCESS_POLICIES_TYPE = "microsoft.keyvault/vaults/accesspolicies"
OPERATION_SECONDS = 30.0


class DeploymentHooks(TypeHooks):
    """Checks the template and parameters, then deploys the resources."""

    def validate(self, ctx: PutContext) -> None:
        props = ctx.body.get("properties") or {}
        if props.get("templateLink"):
            raise HttpError(
                400, "InvalidTemplateDeployment", "The emulator takes inline templates only."
            )
        if not isinstance(props.get("template"), dict):
            raise HttpError(400, "InvalidTemplateDeployment", "properties.template is required.")
        # The mode is case-insensitive: the CLI sends "Incremental" for `--mode incremental`,
        # ARM takes "incremental" too (Json.NET reads enums ignoring case).
        if str(props.get("mode", "Incremental")).lower() != "incremental":
            raise HttpError(
                400,
                "InvalidTemplateDeployment",
                f"Deployment mode '{props['mode']}' is not supported by the emulator: use "
                "Incremental.",
            )
        try:
            expressions = self._context(ctx, props)
            planned = order(props["template"].get("resources") or [], expressions)
        except TemplateError as exc:
            raise HttpError(400, exc.code, str(exc)) from None
        problems = []
        for rid, resource, needs in planned:
            try:
                self._preflight(ctx, rid, resource, needs, expressions)
            except HttpError as exc:
                problems.append({"code": exc.code, "target": rid, "message": exc.message})
            except TemplateError as exc:
                problems.append({"code": exc.code, "target": rid, "message": str(exc)})
        if problems:
            raise PreflightFailed(ctx.rid.name, problems)

    @staticmethod
    def _preflight(
        ctx: PutContext,
        rid: str,
        resource: dict[str, Any],
        needs: set[str],
        expressions: ExpressionContext,
    ) -> None:
        """ARM's preflight of one template resource, before anything is written: its type is
        served and registered, its location known, and (when it depends on nothing the
        deployment makes) the provider's own checks pass on its body."""
        parsed = ids.parse(rid)
        if parsed.full_type.lower() == ACCESS_POLICIES_TYPE:
            return
        spec = ctx.arm.spec_for(parsed)
        ctx.arm.check_provider(parsed.namespace, parsed.subscription)
        existing = ctx.arm.get(rid)
        location = evaluate(resource.get("location"), expressions)
        if spec.tracked and not (location or (existing or {}).get("location")):
            raise HttpError(400, "LocationRequired", "The location property is required.")
        if spec.tracked and location:
            locations.check_location(location, spec.type)
        if needs or (len(parsed.types) > 1 and ctx.arm.get(parsed.parent) is None):
            return  # it refers to what this deployment makes: checked when it is put
        try:
            body = {
                k: evaluate(v, expressions) for k, v in resource.items() if k.lower() not in META
            }
        except TemplateError as exc:
            if exc.code == "NotFound":
                return  # reference() to what this deployment makes: ARM evaluates it later
            raise
        api_version = str(resource.get("apiVersion") or "")
        spec.hooks.validate(
            PutContext(ctx.arm, parsed, body, existing, ctx.principal, "PUT", api_version)
        )

    def _context(self, ctx: PutContext, props: dict[str, Any]) -> ExpressionContext:
        template = props["template"]
        return self.context(
            ctx.arm,
            ctx.rid.scope,
            bind_parameters(template, props.get("parameters") or {}),
            template.get("variables") or {},
        )

    @staticmethod
    def context(
        arm: ArmModel, group_id: str, parameters: dict[str, Any], variables: dict[str, Any]
    ) -> ExpressionContext:
        """What expressions of a deployment into `group_id` read."""

        def reference(resource_id: str, full: bool) -> dict[str, Any]:
            resource = arm.get(resource_id)
            if resource is None:
                raise TemplateError(f"The Resource '{resource_id}' was not found.", "NotFound")
            return public(resource) if full else public(resource)["properties"]

        subscription = arm.subscription(group_id.split("/")[2]).to_json()
        group = public(arm.resource_group(group_id))
        return ExpressionContext(parameters, variables, subscription, group, reference)

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        started = time.monotonic()
        props = resource["properties"]
        template = props.pop("template")
        given = props.get("parameters") or {}
        props.update(
            mode="Incremental",
            correlationId=str(uuid.uuid4()),
            timestamp=utc_now(),
            outputResources=[],
            parameters={k: {"value": (v or {}).get("value")} for k, v in given.items()},
        )
        resource["_error"] = None

        def deploy(resource_id: str, api_version: str, body: dict[str, Any]) -> None:
            try:
                self._deploy(ctx, resource_id, api_version, body)
            except HttpError as exc:
                raise ResourceFailed(exc.code, exc.message) from None
            props["outputResources"].append({"id": resource_id})

        try:
            run = run_template(
                template,
                given,
                lambda values, variables: self.context(ctx.arm, ctx.rid.scope, values, variables),
                deploy,
            )
        except TemplateError as exc:
            raise HttpError(400, exc.code, str(exc)) from None
        props["outputs"] = run.outputs
        if run.failed:
            details = [
                {"code": f.code, "message": f"{rid}: {f.message}"} for rid, f in run.failed.items()
            ]
            summary = "; ".join(f"({d['code']}) {d['message']}" for d in details)
            resource["_error"] = {
                "code": "DeploymentFailed",
                "message": f"At least one resource deployment operation failed: {summary}",
            }
            props["error"] = {**resource["_error"], "details": details}
        props["duration"] = f"PT{time.monotonic() - started:.3f}S"

    @staticmethod
    def _deploy(ctx: PutContext, resource_id: str, api_version: str, body: dict[str, Any]) -> None:
        """Create or update one template resource and wait for its operation."""
        if ids.parse(resource_id).full_type.lower() == ACCESS_POLICIES_TYPE:
            vault_id, kind = resource_id.rsplit("/accessPolicies/", 1)
            policies = (body.get("properties") or {}).get("accessPolicies") or []
            update_access_policies(ctx.arm, vault_id, kind, policies)
            return
        _, _, op = ctx.arm.put(resource_id, body, ctx.principal, "PUT", api_version)
        deadline = time.monotonic() + OPERATION_SECONDS
        while op is not None and ctx.arm.operation(op.id).status == "InProgress":
            if time.monotonic() > deadline:
                raise HttpError(409, "OperationTimedOut", f"'{resource_id}' did not finish.")
            time.sleep(0.01)
        if op is not None and op.status == "Failed":
            error = op.error or failure_error(op.fail)
            raise HttpError(400, error["code"], error["message"])

    def failure(self, arm: ArmModel, resource: dict[str, Any]) -> dict[str, str] | None:
        return resource.get("_error")


class PreflightFailed(HttpError):
    """ARM's answer to a deployment that fails preflight: InvalidTemplateDeployment with one
    detail per refused resource (https://learn.microsoft.com/azure/azure-resource-manager/
    troubleshooting/common-deployment-errors: "InvalidTemplateDeployment … preflight
    validation"; the message as ARM words it)."""

    def __init__(self, deployment: str, details: list[dict[str, str]]) -> None:
        super().__init__(
            400,
            "InvalidTemplateDeployment",
            f"The template deployment '{deployment}' is not valid according to the validation "
            f"procedure. The tracking id is '{uuid.uuid4()}'. See inner errors for details.",
        )
        self.details = details

    def response(self) -> Response:
        answer = super().response()
        answer.body["error"]["details"] = self.details
        return answer


def register_types(arm: ArmModel) -> None:
    """Serve resource-group deployments."""
    arm.register_type(
        TypeSpec(
            DEPLOYMENT_TYPE,
            lro="azure-async-operation",
            create_status=201,
            update_status=201,
            pending_state="Running",
            tracked=False,
            hooks=DeploymentHooks(),
        )
    )
