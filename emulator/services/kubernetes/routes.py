"""Each emulated cluster's API server, under /k8s/<cluster>/ on the emulator's origin: the
discovery and OpenAPI documents kubectl reads, and StorageClasses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.http import Request, Response, Router
from emulator.services.kubernetes import discovery
from emulator.services.kubernetes.models import KubeCluster, KubernetesModel

SERVER = "/k8s/{cluster}"
STORAGE_CLASSES = SERVER + "/apis/storage.k8s.io/v1/storageclasses"


def register(router: Router, kube: KubernetesModel) -> None:
    """Add the discovery and StorageClass routes."""

    def cluster(request: Request) -> KubeCluster:
        return kube.cluster(request.params["cluster"], request.headers.get("authorization"))

    def create(request: Request) -> Response:
        return Response(201, kube.create(cluster(request), request.json()))

    def listing(request: Request) -> Response:
        items = [kube.get(c, n) for c in [cluster(request)] for n in sorted(c.storage_classes)]
        return Response(
            200,
            {
                "kind": "StorageClassList",
                "apiVersion": "storage.k8s.io/v1",
                "metadata": {},
                "items": items,
            },
        )

    def get(request: Request) -> Response:
        return Response(200, kube.get(cluster(request), request.params["name"]))

    def replace(request: Request) -> Response:
        return Response(200, kube.replace(cluster(request), request.params["name"], request.json()))

    def delete(request: Request) -> Response:
        return Response(200, kube.delete(cluster(request), request.params["name"]))

    def patch(request: Request) -> Response:
        current = kube.get(cluster(request), request.params["name"])
        merged = discovery.merge_patch(current, request.json())
        return Response(200, kube.replace(cluster(request), request.params["name"], merged))

    def server_version(request: Request) -> Response:
        found = kube.arm.get(cluster(request).resource_id) or {}
        props = found.get("properties") or {}
        return Response(200, discovery.version(str(props.get("kubernetesVersion") or "1.33")))

    def document(make: Callable[[], dict[str, Any]]) -> Callable[[Request], Response]:
        def served(request: Request) -> Response:
            cluster(request)  # the caller holds the cluster's token
            return Response(200, make())

        return served

    router.add("GET", SERVER + "/version", server_version)
    router.add("GET", SERVER + "/api", document(discovery.core_versions))
    router.add("GET", SERVER + "/api/v1", document(discovery.core_resources))
    router.add("GET", SERVER + "/apis", document(discovery.groups))
    router.add("GET", SERVER + "/apis/storage.k8s.io", document(discovery.group))
    router.add("GET", SERVER + "/apis/storage.k8s.io/v1", document(discovery.resources))
    router.add("GET", SERVER + "/openapi/v3", document(discovery.openapi_index))
    router.add(
        "GET", SERVER + "/openapi/v3/apis/storage.k8s.io/v1", document(discovery.openapi_storage)
    )
    router.add("PATCH", STORAGE_CLASSES + "/{name}", patch)
    router.add("POST", STORAGE_CLASSES, create)
    router.add("GET", STORAGE_CLASSES, listing)
    router.add("GET", STORAGE_CLASSES + "/{name}", get)
    router.add("PUT", STORAGE_CLASSES + "/{name}", replace)
    router.add("DELETE", STORAGE_CLASSES + "/{name}", delete)
