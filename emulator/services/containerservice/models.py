"""Microsoft.ContainerService: managed clusters and their agent pools, with the rules of
customer-managed-key OS disks, and user credentials that reach the cluster's API server."""

from __future__ import annotations

import base64
import math
import re
from typing import Any

import yaml

from emulator.http import HttpError
from emulator.services.arm import ids
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec
from emulator.services.compute.models import DiskEncryptionSetHooks, check_encryption_at_host
from emulator.services.containerservice import kms
from emulator.services.kubernetes.kms import KmsProvider
from emulator.services.kubernetes.models import KubernetesModel

CLUSTER_TYPE = "Microsoft.ContainerService/managedClusters"
AGENT_POOL_TYPE = "Microsoft.ContainerService/managedClusters/agentPools"
DES_TYPE = "microsoft.compute/diskencryptionsets"
MIN_VERSION = (1, 17)
DEFAULT_VERSION = "1.33.2"
# The VM size AKS picks when none is given ("dynamically selected by the AKS resource provider
# based on quota and capacity": https://learn.microsoft.com/en-us/dotnet/api/
# microsoft.azure.commands.aks.createorupdatekubebase.nodevmsize); the emulator always picks
# the former fixed default (https://github.com/Azure/azure-powershell/pull/27663).
DEFAULT_VM_SIZE = "Standard_DS2_v2"


def service_default(props: dict[str, Any], name: str, value: str) -> None:
    """Fill a property the caller left to the service: absent, null or "" (the Azure CLI
    sends "" for `kubernetesVersion`, `orchestratorVersion` and `vmSize` it leaves unset)."""
    if not props.get(name):
        props[name] = value


def check_version(field: str, version: str) -> None:
    """400 for a malformed version or one older than 1.17 (no OS-disk encryption)."""
    match = re.match(r"^(\d+)\.(\d+)(\.\d+)?$", version or "")
    if not match:
        raise HttpError(
            400,
            "InvalidParameter",
            f"{field} '{version}' is not a Kubernetes version (major.minor[.patch]).",
        )
    if (int(match[1]), int(match[2])) < MIN_VERSION:
        raise HttpError(
            400,
            "KubernetesVersionNotSupported",
            f"{field} '{version}' is not "
            "supported: customer-managed keys for OS disks need Kubernetes 1.17 or "
            "newer.",
        )


def check_pool_type(field: str, pool: dict[str, Any]) -> None:
    """Only virtual machine scale sets."""
    kind = pool.get("type") or "VirtualMachineScaleSets"
    if kind != "VirtualMachineScaleSets":
        raise HttpError(
            400,
            "InvalidParameter",
            f"{field} '{kind}' is not supported with "
            "customer-managed keys: the cluster must use VirtualMachineScaleSets.",
        )


class ClusterHooks(TypeHooks):
    """A cluster's DES is fixed at creation, in the cluster's region, usable by its identity;
    its KMS key (`kms`) seals the Secrets of its API server."""

    def __init__(
        self, kube: KubernetesModel, des_hooks: DiskEncryptionSetHooks, base_url: str, ca_pem: bytes
    ) -> None:
        self.kube, self.des_hooks = kube, des_hooks
        self.base_url, self.ca_pem = base_url, ca_pem
        self.kms = KmsProvider(des_hooks.keyvault)
        kube.attach_kms(self.kms)

    def validate(self, ctx: PutContext) -> None:
        props = ctx.body.get("properties") or {}
        old = (ctx.existing or {}).get("properties") or {}
        version = props.get("kubernetesVersion") or old.get("kubernetesVersion") or DEFAULT_VERSION
        check_version("properties.kubernetesVersion", version)
        kms.check(ctx, self.kms, version)
        pools = props.get("agentPoolProfiles") or old.get("agentPoolProfiles") or []
        if not pools:
            raise HttpError(
                400,
                "InvalidParameter",
                "properties.agentPoolProfiles needs at least one (system) node pool.",
            )
        for i, pool in enumerate(pools):
            check_pool_type(f"properties.agentPoolProfiles[{i}].type", pool)
            check_encryption_at_host(
                ctx.arm, ctx.rid.subscription, f"properties.agentPoolProfiles[{i}]", pool
            )
        wanted = props.get("diskEncryptionSetID")
        had = old.get("diskEncryptionSetID")
        if (
            ctx.existing
            and (wanted or "").lower() != (had or "").lower()
            and ("diskEncryptionSetID" in props)
        ):
            raise HttpError(
                400,
                "PropertyChangeNotAllowed",
                "properties.diskEncryptionSetID "
                "can only be set when the cluster is created (an existing cluster's "
                "OS disks cannot be re-encrypted): create a new cluster with it.",
            )
        if wanted and not ctx.existing:
            location = ctx.body.get("location", "")
            self.check_des(ctx.arm, wanted, location)

    def check_des(self, arm: ArmModel, des_id: str, location: str) -> None:
        """The DES exists, is in `location`, and its identity can use its key."""
        des = arm.get(des_id)
        if des is None or des["type"].lower() != DES_TYPE:
            raise HttpError(
                400,
                "DiskEncryptionSetNotFound",
                f"The disk encryption set '{des_id}' was not found.",
            )
        if des["location"] != location.lower().replace(" ", ""):
            raise HttpError(
                400,
                "InvalidParameter",
                f"The disk encryption set '{des['name']}' "
                f"is in '{des['location']}'; it must be in the cluster's region "
                f"'{location}'.",
            )
        key_url = des["properties"]["activeKey"]["keyUrl"]
        vault, _, _ = self.des_hooks.keyvault.resolve_key_url(key_url)
        self.des_hooks.check_access(arm, des, vault, key_url)

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        old = (ctx.existing or {}).get("properties") or {}
        props = resource["properties"] = {**old, **resource["properties"]}
        props.pop("status", None)  # a successful write clears an earlier failure
        resource["_kms_stuck"] = kms.stuck(ctx, self.kube, self.kms)
        service_default(props, "kubernetesVersion", DEFAULT_VERSION)
        props["currentKubernetesVersion"] = props["kubernetesVersion"]
        props.setdefault("dnsPrefix", ctx.rid.name)
        props["fqdn"] = f"{props['dnsPrefix']}.hcp.{resource['location']}.azmk8s.io"
        group = ctx.rid.resource_group
        props.setdefault("nodeResourceGroup", f"MC_{group}_{ctx.rid.name}_{resource['location']}")
        for pool in props["agentPoolProfiles"]:
            pool.setdefault("type", "VirtualMachineScaleSets")
            service_default(pool, "orchestratorVersion", props["kubernetesVersion"])
            service_default(pool, "vmSize", DEFAULT_VM_SIZE)
            pool.setdefault("osDiskType", "Managed")
            pool["provisioningState"] = "Succeeded"
        cluster = self.kube.add_cluster(resource["id"])
        resource["_kube"] = cluster.id

    def succeeded(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        kms.settle(resource, self.kube, self.kms)
        for pool in resource["properties"]["agentPoolProfiles"]:
            pool_id = f"{resource['id']}/agentPools/{pool['name']}"
            body = {k: v for k, v in pool.items() if k != "name"}
            arm.resources[pool_id.lower()] = {
                "id": pool_id,
                "name": pool["name"],
                "type": AGENT_POOL_TYPE,
                "properties": {**body, "provisioningState": "Succeeded"},
            }

    def deleted(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        self.kube.remove_cluster(resource["id"])

    def duration(self, arm: ArmModel, resource: dict[str, Any]) -> float:
        return math.inf if resource.get("_kms_stuck") else 0.0

    def refresh(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        kms.failure(resource, self.kube, self.kms)

    def user_credentials(
        self, arm: ArmModel, cluster: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        """listClusterUserCredential: a kubeconfig for the cluster's API server."""
        kube = self.kube.clusters[cluster["_kube"]]
        name = cluster["name"]
        ca = base64.b64encode(self.ca_pem).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": name,
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "server": f"{self.base_url}/k8s/{kube.id}",
                        "certificate-authority-data": ca,
                    },
                }
            ],
            "users": [{"name": f"clusterUser_{name}", "user": {"token": kube.token}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": f"clusterUser_{name}"}}
            ],
        }
        value = base64.b64encode(yaml.safe_dump(config).encode()).decode()
        return {"kubeconfigs": [{"name": "clusterUser", "value": value}]}


class AgentPoolHooks(TypeHooks):
    """Node pools: scale sets only, a supported version; OS disks follow the cluster's DES."""

    def validate(self, ctx: PutContext) -> None:
        props = ctx.body.get("properties") or {}
        check_pool_type("properties.type", props)
        check_encryption_at_host(ctx.arm, ctx.rid.subscription, "properties", props)
        cluster = ctx.arm.require(ctx.rid.parent)
        version = props.get("orchestratorVersion") or cluster["properties"]["kubernetesVersion"]
        check_version("properties.orchestratorVersion", version)

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        cluster = ctx.arm.require(ctx.rid.parent)
        props = resource["properties"]
        props.setdefault("type", "VirtualMachineScaleSets")
        service_default(props, "orchestratorVersion", cluster["properties"]["kubernetesVersion"])
        service_default(props, "vmSize", DEFAULT_VM_SIZE)
        props.setdefault("osDiskType", "Managed")
        props.setdefault("mode", "User")

    def succeeded(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        cluster = arm.require(ids.parse(resource["id"]).parent)
        profiles = [
            p for p in cluster["properties"]["agentPoolProfiles"] if p["name"] != resource["name"]
        ]
        cluster["properties"]["agentPoolProfiles"] = [
            *profiles,
            {"name": resource["name"], **resource["properties"]},
        ]


def register_types(
    arm: ArmModel,
    kube: KubernetesModel,
    des_hooks: DiskEncryptionSetHooks,
    base_url: str,
    ca_pem: bytes,
) -> None:
    """Serve clusters and agent pools (201 + Azure-AsyncOperation, as AKS answers)."""
    cluster_hooks = ClusterHooks(kube, des_hooks, base_url, ca_pem)
    arm.register_type(
        TypeSpec(
            CLUSTER_TYPE,
            lro="azure-async-operation",
            create_status=201,
            update_status=200,
            delete_lro="location",
            hooks=cluster_hooks,
            actions={"listclusterusercredential": cluster_hooks.user_credentials},
        )
    )
    arm.register_type(
        TypeSpec(
            AGENT_POOL_TYPE,
            lro="azure-async-operation",
            create_status=201,
            update_status=200,
            delete_lro="location",
            tracked=False,
            hooks=AgentPoolHooks(),
        )
    )
