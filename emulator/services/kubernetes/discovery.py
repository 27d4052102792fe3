"""What kubectl reads before it applies a manifest: the server version, API discovery (the
legacy, unaggregated documents: kubectl falls back to them when the answer is plain JSON) and
the OpenAPI v3 document of storage.k8s.io/v1. The PATCH operation of StorageClass declares
the `fieldValidation` query parameter, so kubectl leaves validation to the server (cli-runtime
resource/query_param_verifier_v3.go looks for it on the PATCH operation of the kind's path).

Shapes: https://kubernetes.io/docs/concepts/overview/kubernetes-api/ (discovery, OpenAPI v3),
https://github.com/kubernetes/kubernetes/blob/master/api/openapi-spec/v3/
apis__storage.k8s.io__v1_openapi.json (the document trimmed to StorageClass)."""

from __future__ import annotations

from typing import Any

GROUP, VERSION, KIND = "storage.k8s.io", "v1", "StorageClass"
GROUP_VERSION = f"{GROUP}/{VERSION}"
SCHEMA = "io.k8s.api.storage.v1.StorageClass"
GVK = {"group": GROUP, "version": VERSION, "kind": KIND}
OPENAPI_HASH = "byok-emulator-storage-v1"


def version(kubernetes_version: str) -> dict[str, Any]:
    """GET /version."""
    major, minor, patch = [*kubernetes_version.lstrip("v").split("."), "0", "0"][:3]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{major}.{minor}.{patch}",
        "platform": "linux/amd64",
    }


def core_versions() -> dict[str, Any]:
    """GET /api."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def core_resources() -> dict[str, Any]:
    """GET /api/v1: Namespaces and Secrets (the verbs the emulated server serves)."""
    return {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": False,
                "kind": "Namespace",
                "shortNames": ["ns"],
                "verbs": ["create", "get", "list"],
            },
            {
                "name": "secrets",
                "singularName": "secret",
                "namespaced": True,
                "kind": "Secret",
                "verbs": ["create", "delete", "get", "list", "update"],
            },
        ],
    }


def _group() -> dict[str, Any]:
    preferred = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [preferred], "preferredVersion": preferred}


def groups() -> dict[str, Any]:
    """GET /apis."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group()]}


def group() -> dict[str, Any]:
    """GET /apis/storage.k8s.io."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_group()}


def resources() -> dict[str, Any]:
    """GET /apis/storage.k8s.io/v1."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": "storageclasses",
                "singularName": "storageclass",
                "namespaced": False,
                "kind": KIND,
                "shortNames": ["sc"],
                "verbs": ["create", "delete", "get", "list", "patch", "update"],
            }
        ],
    }


def openapi_index() -> dict[str, Any]:
    """GET /openapi/v3."""
    url = f"/openapi/v3/apis/{GROUP_VERSION}?hash={OPENAPI_HASH}"
    return {"paths": {f"apis/{GROUP_VERSION}": {"serverRelativeURL": url}}}


def _operation(action: str, *query: str) -> dict[str, Any]:
    return {
        "operationId": f"{action}StorageV1StorageClass",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": GVK,
        "parameters": [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in query
        ],
        "responses": {
            "200": {
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{SCHEMA}"}}
                }
            }
        },
    }


def openapi_storage() -> dict[str, Any]:
    """GET /openapi/v3/apis/storage.k8s.io/v1: StorageClass's paths and schema."""
    writes = ("dryRun", "fieldManager", "fieldValidation")
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {
            f"/apis/{GROUP_VERSION}/storageclasses": {
                "get": _operation("list"),
                "post": _operation("post", *writes),
            },
            f"/apis/{GROUP_VERSION}/storageclasses/{{name}}": {
                "get": _operation("get"),
                "put": _operation("put", *writes),
                "patch": _operation("patch", *writes, "force"),
                "delete": _operation("delete", "dryRun"),
            },
        },
        "components": {
            "schemas": {
                SCHEMA: {
                    "type": "object",
                    "required": ["provisioner"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "provisioner": {"type": "string"},
                        "parameters": string_map,
                        "reclaimPolicy": {"type": "string"},
                        "volumeBindingMode": {"type": "string"},
                        "allowVolumeExpansion": {"type": "boolean"},
                        "mountOptions": {"type": "array", "items": {"type": "string"}},
                        "allowedTopologies": {"type": "array", "items": {"type": "object"}},
                    },
                    "x-kubernetes-group-version-kind": [GVK],
                }
            }
        },
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what a strategic merge patch of a StorageClass amounts to:
    its lists have no merge keys, so they are replaced)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
