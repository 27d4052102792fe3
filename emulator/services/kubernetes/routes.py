"""Each emulated cluster's API server, under /k8s/<cluster>/ on the emulator's origin."""

from __future__ import annotations

from emulator.http import Request, Response, Router
from emulator.services.kubernetes.models import KubeCluster, KubernetesModel

STORAGE_CLASSES = "/k8s/{cluster}/apis/storage.k8s.io/v1/storageclasses"


def register(router: Router, kube: KubernetesModel) -> None:
    """Add the StorageClass routes."""

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

    router.add("POST", STORAGE_CLASSES, create)
    router.add("GET", STORAGE_CLASSES, listing)
    router.add("GET", STORAGE_CLASSES + "/{name}", get)
    router.add("PUT", STORAGE_CLASSES + "/{name}", replace)
    router.add("DELETE", STORAGE_CLASSES + "/{name}", delete)
