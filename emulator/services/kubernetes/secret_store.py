"""Core v1 Secrets and Namespaces of an emulated cluster, as the API server stores them:
each write seals the Secret's data with the KMS key current then (`kms`); an update that
changes nothing is not written unless the stored data was sealed with another key (the
storage layer's "stale" rewrite, k8s.io/apiserver storage/etcd3 GuaranteedUpdate), so
`kubectl get secrets -A -o json | kubectl replace -f -` re-encrypts
(https://kubernetes.io/docs/tasks/administer-cluster/encrypt-data/). Lists are paged with
`limit` and `continue` (https://kubernetes.io/docs/reference/using-api/api-concepts/
#retrieving-large-results-sets-in-chunks)."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import secrets
from typing import Any

from emulator.services.arm.models import utc_now
from emulator.services.kubernetes.models import KubeCluster, KubernetesModel
from emulator.services.kubernetes.status import KubeError

SECRETS = "secrets"


def _not_found(kind: str, name: str) -> KubeError:
    return KubeError(404, "NotFound", f'{kind} "{name}" not found')


def check_namespace(cluster: KubeCluster, namespace: str) -> None:
    """404 unless the namespace exists."""
    if namespace not in cluster.namespaces:
        raise _not_found("namespaces", namespace)


def namespace_object(name: str) -> dict[str, Any]:
    """A Namespace as the API returns it."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "status": {"phase": "Active"},
    }


def create_namespace(kube: KubernetesModel, cluster: KubeCluster, body: dict[str, Any]) -> Any:
    """Create a Namespace (409 AlreadyExists)."""
    name = (body.get("metadata") or {}).get("name")
    if not name:
        raise KubeError(422, "Invalid", "Namespace needs metadata.name")
    with kube.secrets_lock:
        if name in cluster.namespaces:
            raise KubeError(409, "AlreadyExists", f'namespaces "{name}" already exists')
        cluster.namespaces.add(name)
    return namespace_object(name)


def _data(name: str, body: dict[str, Any]) -> dict[str, str]:
    """`data` with `stringData` merged in (base64), each value checked."""
    data = dict(body.get("data") or {})
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise KubeError(
                422, "Invalid", f'Secret "{name}" is invalid: data[{key}]: illegal base64 data'
            ) from None
    for key, value in (body.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    return data


def _write(
    kube: KubernetesModel,
    cluster: KubeCluster,
    namespace: str,
    body: dict[str, Any],
    current: dict[str, Any] | None,
) -> dict[str, Any]:
    """Seal and store; the caller holds `secrets_lock` (never taken under ARM's lock, so the
    Key Vault and ARM reads of sealing cannot deadlock with a cluster PUT)."""
    name = body["metadata"]["name"]
    data = _data(name, body)
    meta = {
        k: v
        for k, v in body["metadata"].items()
        if k in ("name", "labels", "annotations", "finalizers")
    }
    stored: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**meta, "namespace": namespace},
        "type": body.get("type") or (current or {}).get("type") or "Opaque",
    }
    key, caller = kube.kms_key(cluster)
    sealed = cluster.sealed.get((namespace, name))
    if current is not None and sealed is not None and sealed.key == key:
        same = {k: v for k, v in current.items() if k != "metadata"} == {
            k: v for k, v in stored.items() if k != "metadata"
        } and {k: current["metadata"].get(k) for k in meta} == meta
        if same and _open(kube, cluster, namespace, name) == data:
            return _read(kube, cluster, namespace, name)  # a no-op update is not written
    if kube.kms is None:
        raise KubeError(503, "ServiceUnavailable", "the KMS provider is not configured")
    plaintext = json.dumps(data, sort_keys=True).encode()
    cluster.sealed[(namespace, name)] = kube.kms.seal(key, caller, plaintext)
    cluster.resource_version += 1
    old_meta = (current or {}).get("metadata") or {}
    stored["metadata"].update(
        uid=old_meta.get("uid") or secrets.token_hex(16),
        creationTimestamp=old_meta.get("creationTimestamp") or utc_now(),
        resourceVersion=str(cluster.resource_version),
    )
    cluster.secrets[(namespace, name)] = stored
    return _read(kube, cluster, namespace, name)


def _open(kube: KubernetesModel, cluster: KubeCluster, namespace: str, name: str) -> Any:
    sealed = cluster.sealed[(namespace, name)]
    if kube.kms is None:
        return json.loads(sealed.data)
    _, caller = kube.kms_key(cluster)
    return json.loads(kube.kms.open(sealed, cluster.kms_slots, caller))


def _read(kube: KubernetesModel, cluster: KubeCluster, namespace: str, name: str) -> Any:
    stored = cluster.secrets.get((namespace, name))
    if stored is None:
        raise _not_found(SECRETS, name)
    return {**copy.deepcopy(stored), "data": _open(kube, cluster, namespace, name)}


def get(kube: KubernetesModel, cluster: KubeCluster, namespace: str, name: str) -> Any:
    """A Secret, its data decrypted (500 when its KMS key cannot be used)."""
    with kube.secrets_lock:
        return _read(kube, cluster, namespace, name)


def create(kube: KubernetesModel, cluster: KubeCluster, namespace: str, body: Any) -> Any:
    """Create a Secret (409 AlreadyExists)."""
    name = (body.get("metadata") or {}).get("name")
    if body.get("kind", "Secret") != "Secret" or not name:
        raise KubeError(422, "Invalid", "Secret needs kind Secret and metadata.name")
    with kube.secrets_lock:
        check_namespace(cluster, namespace)
        if (namespace, name) in cluster.secrets:
            raise KubeError(409, "AlreadyExists", f'secrets "{name}" already exists')
        return _write(kube, cluster, namespace, body, None)


def replace(
    kube: KubernetesModel, cluster: KubeCluster, namespace: str, name: str, body: Any
) -> Any:
    """Replace a Secret; a stale `metadata.resourceVersion` is a 409 Conflict."""
    with kube.secrets_lock:
        current = cluster.secrets.get((namespace, name))
        if current is None:
            raise _not_found(SECRETS, name)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise KubeError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on secrets "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        return _write(kube, cluster, namespace, {**body, "metadata": {**body["metadata"]}}, current)


def delete(kube: KubernetesModel, cluster: KubeCluster, namespace: str, name: str) -> Any:
    """Delete a Secret."""
    with kube.secrets_lock:
        found = _read(kube, cluster, namespace, name)
        del cluster.secrets[(namespace, name)], cluster.sealed[(namespace, name)]
        return found


def page(
    kube: KubernetesModel,
    cluster: KubeCluster,
    namespace: str | None,
    limit: int,
    token: str | None,
) -> dict[str, Any]:
    """A SecretList page: names after the `continue` token, at most `limit` (0: all)."""
    with kube.secrets_lock:
        if namespace is not None:
            check_namespace(cluster, namespace)
        keys = sorted(k for k in cluster.secrets if namespace in (None, k[0]))
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token)))
            except (ValueError, TypeError):
                raise KubeError(400, "BadRequest", "continue key is not valid") from None
            keys = [k for k in keys if k > after]
        shown = keys[:limit] if limit else keys
        meta: dict[str, Any] = {"resourceVersion": str(cluster.resource_version)}
        if len(shown) < len(keys):
            last = json.dumps(list(shown[-1])).encode()
            meta["continue"] = base64.urlsafe_b64encode(last).decode()
            meta["remainingItemCount"] = len(keys) - len(shown)
        return {
            "apiVersion": "v1",
            "kind": "SecretList",
            "metadata": meta,
            "items": [_read(kube, cluster, ns, name) for ns, name in shown],
        }
