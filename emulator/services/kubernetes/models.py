"""The small part of a cluster's Kubernetes API the procedures use: StorageClasses, with
the Azure disk parameters validated, and Secrets (`secret_store`), sealed by the cluster's
KMS provider (`kms`)."""

from __future__ import annotations

import copy
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from emulator.services.arm.models import ArmModel, utc_now
from emulator.services.kubernetes.kms import (
    Caller,
    KmsProvider,
    Sealed,
    Slots,
    plugin_caller,
    settings,
)
from emulator.services.kubernetes.status import KubeError

AZURE_DISK_PROVISIONERS = ("disk.csi.azure.com", "kubernetes.io/azure-disk")
DES_TYPE = "microsoft.compute/diskencryptionsets"


@dataclass
class KubeCluster:
    """One cluster's API server state."""

    id: str  # the path segment of its server URL
    resource_id: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    storage_classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_version: int = 1
    namespaces: set[str] = field(
        default_factory=lambda: {"default", "kube-system", "kube-public", "kube-node-lease"}
    )
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # no data
    sealed: dict[tuple[str, str], Sealed] = field(default_factory=dict)  # their data in etcd
    kms_slots: Slots = field(default_factory=Slots)


class KubernetesModel:
    """API servers of the emulated managed clusters."""

    def __init__(self, arm: ArmModel) -> None:
        self.arm = arm
        self.lock = threading.Lock()
        self.secrets_lock = threading.Lock()
        self.clusters: dict[str, KubeCluster] = {}
        self.kms: KmsProvider | None = None  # set once Key Vault is known (`attach_kms`)

    def attach_kms(self, kms: KmsProvider) -> None:
        """The KMS provider that seals Secrets with the clusters' Key Vault keys."""
        self.kms = kms

    def of_resource(self, resource_id: str) -> KubeCluster | None:
        """The API server of a managed cluster resource."""
        for cluster in self.clusters.values():
            if cluster.resource_id.lower() == resource_id.lower():
                return cluster
        return None

    def kms_key(self, cluster: KubeCluster) -> tuple[str | None, Caller]:
        """(versioned key id new Secrets are sealed with or None, the cluster's plugin).
        A settled cluster's key id is taken into the current slot (a versionless id picks up
        the latest key version: the new KMS experience's automatic rotation)."""
        resource = self.arm.get(cluster.resource_id) or {}
        kms = settings(resource)
        if kms is None or self.kms is None:
            return None, Caller(None)
        if resource["properties"].get("provisioningState") == "Succeeded":
            cluster.kms_slots.take(self.kms.version_id(kms["keyId"]))
        return cluster.kms_slots.current, plugin_caller(resource)

    def sealed_with(self, cluster: KubeCluster) -> dict[str, str | None]:
        """Which key id each Secret ("namespace/name") was written with (None: no KMS)."""
        return {f"{ns}/{name}": s.key for (ns, name), s in sorted(cluster.sealed.items())}

    def add_cluster(self, resource_id: str) -> KubeCluster:
        """An API server for a new cluster (kept when the cluster is updated)."""
        with self.lock:
            for cluster in self.clusters.values():
                if cluster.resource_id.lower() == resource_id.lower():
                    return cluster
            cluster = KubeCluster(secrets.token_hex(8), resource_id)
            self.clusters[cluster.id] = cluster
            return cluster

    def remove_cluster(self, resource_id: str) -> None:
        """Forget a deleted cluster's API server."""
        with self.lock:
            for key, cluster in list(self.clusters.items()):
                if cluster.resource_id.lower() == resource_id.lower():
                    del self.clusters[key]

    def cluster(self, cluster_id: str, authorization: str | None) -> KubeCluster:
        """The cluster behind a server URL, for a caller with its token (else 401)."""
        cluster = self.clusters.get(cluster_id)
        if cluster is None:
            raise KubeError(404, "NotFound", "no such cluster")
        if authorization != f"Bearer {cluster.token}":
            raise KubeError(401, "Unauthorized", "Unauthorized")
        return cluster

    def validate_storage_class(self, body: dict[str, Any]) -> None:
        """422 Invalid unless the StorageClass is a valid Azure disk class."""
        name = (body.get("metadata") or {}).get("name")
        if body.get("kind") != "StorageClass" or not name:
            raise KubeError(
                422, "Invalid", "StorageClass needs kind StorageClass and metadata.name"
            )
        provisioner = body.get("provisioner")
        if provisioner not in AZURE_DISK_PROVISIONERS:
            raise KubeError(
                422,
                "Invalid",
                f'StorageClass.storage.k8s.io "{name}" is invalid: '
                f"provisioner '{provisioner}' is not an Azure disk provisioner "
                f"({', '.join(AZURE_DISK_PROVISIONERS)})",
            )
        params = {k.lower(): v for k, v in (body.get("parameters") or {}).items()}
        des_id = params.get("diskencryptionsetid")
        if not params.get("skuname"):
            raise KubeError(
                422, "Invalid", f'StorageClass "{name}": parameters.skuname is required'
            )
        if provisioner == "kubernetes.io/azure-disk" and params.get("kind", "").lower() != (
            "managed"
        ):
            raise KubeError(
                422,
                "Invalid",
                f'StorageClass "{name}": the in-tree provisioner '
                "needs parameters.kind: managed for diskEncryptionSetID",
            )
        if des_id:
            des = self.arm.get(des_id)
            if des is None or des["type"].lower() != DES_TYPE:
                raise KubeError(
                    422,
                    "Invalid",
                    f'StorageClass "{name}": diskEncryptionSetID '
                    f"'{des_id}' does not name an existing disk encryption set",
                )

    def create(self, cluster: KubeCluster, body: dict[str, Any]) -> dict[str, Any]:
        """Create a StorageClass (409 AlreadyExists when the name is taken)."""
        self.validate_storage_class(body)
        name = body["metadata"]["name"]
        with self.lock:
            if name in cluster.storage_classes:
                raise KubeError(
                    409, "AlreadyExists", f'storageclasses.storage.k8s.io "{name}" already exists'
                )
            return self._store(cluster, body, None)

    def replace(self, cluster: KubeCluster, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace a StorageClass; provisioner and parameters are immutable, as in Kubernetes."""
        self.validate_storage_class(body)
        with self.lock:
            current = self.get(cluster, name)
            wanted_version = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
                raise KubeError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on "
                    f'storageclasses.storage.k8s.io "{name}": the object has been '
                    "modified; please apply your changes to the latest version",
                )
            for immutable in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
                if body.get(immutable) != current.get(immutable) and immutable in body:
                    raise KubeError(
                        422,
                        "Invalid",
                        f'StorageClass.storage.k8s.io "{name}" is '
                        f"invalid: {immutable}: Forbidden: updates to {immutable} "
                        "are forbidden.",
                    )
            return self._store(cluster, body, current)

    def get(self, cluster: KubeCluster, name: str) -> dict[str, Any]:
        """A StorageClass (404 NotFound)."""
        found = cluster.storage_classes.get(name)
        if found is None:
            raise KubeError(404, "NotFound", f'storageclasses.storage.k8s.io "{name}" not found')
        return copy.deepcopy(found)

    def delete(self, cluster: KubeCluster, name: str) -> dict[str, Any]:
        """Delete a StorageClass."""
        with self.lock:
            found = self.get(cluster, name)
            del cluster.storage_classes[name]
            return found

    @staticmethod
    def _store(
        cluster: KubeCluster, body: dict[str, Any], current: dict[str, Any] | None
    ) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored.setdefault("apiVersion", "storage.k8s.io/v1")
        stored.setdefault("reclaimPolicy", "Delete")
        stored.setdefault("volumeBindingMode", "Immediate")
        meta = stored.setdefault("metadata", {})
        cluster.resource_version += 1
        meta["resourceVersion"] = str(cluster.resource_version)
        meta["uid"] = (current or {}).get("metadata", {}).get("uid") or secrets.token_hex(16)
        meta["creationTimestamp"] = (current or {}).get("metadata", {}).get(
            "creationTimestamp"
        ) or utc_now()
        cluster.storage_classes[meta["name"]] = stored
        return copy.deepcopy(stored)
