"""Each emulated cluster's API server, under /k8s/<cluster>/ on the emulator's origin: the
discovery and OpenAPI documents kubectl reads, StorageClasses, Namespaces and Secrets; bodies
in JSON or protobuf, answers in JSON (`protobuf`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.http import Request, Response, Router
from emulator.services.kubernetes import discovery, protobuf, secret_store
from emulator.services.kubernetes.models import KubeCluster, KubernetesModel

SERVER = "/k8s/{cluster}"
STORAGE_CLASSES = SERVER + "/apis/storage.k8s.io/v1/storageclasses"
NAMESPACES = SERVER + "/api/v1/namespaces"
SECRETS = NAMESPACES + "/{namespace}/secrets"


def register(router: Router, kube: KubernetesModel) -> None:
    """Add the discovery and StorageClass routes."""

    def cluster(request: Request) -> KubeCluster:
        protobuf.check_accept(request)
        return kube.cluster(request.params["cluster"], request.headers.get("authorization"))

    def create(request: Request) -> Response:
        return Response(201, kube.create(cluster(request), protobuf.body(request)))

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
        return Response(
            200, kube.replace(cluster(request), request.params["name"], protobuf.body(request))
        )

    def delete(request: Request) -> Response:
        return Response(200, kube.delete(cluster(request), request.params["name"]))

    def patch(request: Request) -> Response:
        current = kube.get(cluster(request), request.params["name"])
        merged = discovery.merge_patch(current, request.json())
        return Response(200, kube.replace(cluster(request), request.params["name"], merged))

    def namespaces(request: Request) -> Response:
        found = sorted(cluster(request).namespaces)
        items = [secret_store.namespace_object(n) for n in found]
        return Response(
            200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": items}
        )

    def namespace(request: Request) -> Response:
        secret_store.check_namespace(cluster(request), request.params["namespace"])
        return Response(200, secret_store.namespace_object(request.params["namespace"]))

    def create_namespace(request: Request) -> Response:
        return Response(
            201, secret_store.create_namespace(kube, cluster(request), protobuf.body(request))
        )

    def secrets(request: Request) -> Response:
        namespace = request.params.get("namespace")
        limit = int(request.query.get("limit") or 0)
        token = request.query.get("continue")
        return Response(200, secret_store.page(kube, cluster(request), namespace, limit, token))

    def secret(request: Request) -> Response:
        ns, name = request.params["namespace"], request.params["name"]
        if request.method == "PUT":
            return Response(
                200, secret_store.replace(kube, cluster(request), ns, name, protobuf.body(request))
            )
        if request.method == "DELETE":
            return Response(200, secret_store.delete(kube, cluster(request), ns, name))
        return Response(200, secret_store.get(kube, cluster(request), ns, name))

    def create_secret(request: Request) -> Response:
        ns = request.params["namespace"]
        return Response(
            201, secret_store.create(kube, cluster(request), ns, protobuf.body(request))
        )

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
    router.add("GET", NAMESPACES, namespaces)
    router.add("POST", NAMESPACES, create_namespace)
    router.add("GET", NAMESPACES + "/{namespace}", namespace)
    router.add("GET", SERVER + "/api/v1/secrets", secrets)
    router.add("GET", SECRETS, secrets)
    router.add("POST", SECRETS, create_secret)
    for method in ("GET", "PUT", "DELETE"):
        router.add(method, SECRETS + "/{name}", secret)
