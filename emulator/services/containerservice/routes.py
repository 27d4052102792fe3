"""`GET …/providers/Microsoft.ContainerService/locations/{location}/kubernetesVersions` (what
`az aks get-versions` reads): the versions the emulator's clusters take, the service default
flagged. Shape: KubernetesVersionListResult
(https://learn.microsoft.com/en-us/rest/api/aks/managed-clusters/list-kubernetes-versions)."""

from __future__ import annotations

from emulator.http import Request, Response, Router
from emulator.services.arm import locations
from emulator.services.arm.models import ArmModel
from emulator.services.arm.routes import add_arm_route
from emulator.services.containerservice.models import DEFAULT_VERSION
from emulator.services.entra.models import Principal

PATCHES = ("1.31.9", "1.32.5", DEFAULT_VERSION)


def kubernetes_versions() -> dict[str, object]:
    """One entry per minor version, newest last; the default's minor is `isDefault`."""
    default_minor = DEFAULT_VERSION.rsplit(".", 1)[0]
    values = []
    for patch in PATCHES:
        minor = patch.rsplit(".", 1)[0]
        values.append(
            {
                "version": minor,
                "isPreview": False,
                **({"isDefault": True} if minor == default_minor else {}),
                "capabilities": {"supportPlan": ["KubernetesOfficial"]},
                "patchVersions": {patch: {"upgrades": []}},
            }
        )
    return {"values": values}


def register(router: Router, arm: ArmModel) -> None:
    """Add the Kubernetes versions route (before the generic ARM routes)."""

    def versions(request: Request, principal: Principal) -> Response:
        arm.subscription(request.params["sub"])
        locations.check_location(request.params["location"], "Microsoft.ContainerService")
        return Response(200, kubernetes_versions())

    add_arm_route(
        router,
        arm,
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{location}/"
        "kubernetesVersions",
        versions,
    )
