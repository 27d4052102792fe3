"""The real Azure CLI as a second client of the emulator: after our flows ran, `az … show`
reports the state the flows returned, field by field. Installs nothing: needs `az` from
BYOK_AZ or PATH (`./scripts/install-azure-cli` puts the pinned one in .azcli/)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from clients.azure import AzureClients
from console.emulator_blocks import emulator_azure_credentials
from emulator.server import Emulator
from flows.acr import EncryptedRegistryRequest, EncryptedRegistryResult, create_encrypted_registry
from flows.aks import (
    AksClusterRequest,
    NodePoolRequest,
    add_encrypted_node_pool,
    create_encrypted_aks_cluster,
)
from flows.disk_encryption_set import (
    DiskEncryptionSetRequest,
    DiskEncryptionSetResult,
    prepare_disk_encryption_set,
)
from flows.gallery import ImageVersionRequest, publish_encrypted_image_version
from flows.registration import (
    FeatureRegistrationRequest,
    FeatureRegistrationResult,
    ensure_feature_registration,
)
from flows.virtual_machine import VmFromImageRequest, VmResult, create_vm_from_encrypted_image
from tasks.aks import ClusterInfo
from tasks.gallery import ImageVersionResult
from tests.cli.azcli import Az, logged_in, needs_az
from tests.helpers import managed_image

pytestmark = needs_az
BLOCK = "emulator-azure-cli"


@dataclass(frozen=True)
class FlowResults:
    """What our flows returned."""

    registration: FeatureRegistrationResult
    des: DiskEncryptionSetResult
    cluster: ClusterInfo
    image: ImageVersionResult
    vm: VmResult
    registry: EncryptedRegistryResult


def run_flows(block: str, emulator: Emulator) -> FlowResults:
    """One run of each flow whose resources `az` inspects."""
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", polls=2)
    registration = ensure_feature_registration(
        FeatureRegistrationRequest(
            azure_credentials_block=block, poll_seconds=0.01, timeout_minutes=0.5
        )
    )
    des = prepare_disk_encryption_set(
        DiskEncryptionSetRequest(
            azure_credentials_block=block,
            resource_group="rg-aks",
            location="westeurope",
            vault_name="kv-aks",
            key_name="aks-key",
            des_name="des-aks",
            propagation_timeout_minutes=0.5,
        )
    )
    des_id = des.disk_encryption_set.id
    create_encrypted_aks_cluster(
        AksClusterRequest(
            azure_credentials_block=block,
            resource_group="rg-aks",
            location="westeurope",
            cluster_name="aks1",
            disk_encryption_set_id=des_id,
            propagation_timeout_minutes=0.5,
        )
    )
    cluster = add_encrypted_node_pool(
        NodePoolRequest(
            azure_credentials_block=block,
            resource_group="rg-aks",
            cluster_name="aks1",
            pool_name="userpool",
            disk_encryption_set_id=des_id,
        )
    )
    source = managed_image(AzureClients(emulator_azure_credentials(emulator)), "westeurope")
    image = publish_encrypted_image_version(
        ImageVersionRequest(
            azure_credentials_block=block,
            resource_group="rg-img",
            location="westeurope",
            gallery_name="gallery1",
            image_name="ubuntu",
            version="1.0.0",
            source={"managed_image_id": source},
            target_regions=[
                {"name": "westeurope", "encryption": f"{des_id},0,{des_id},1,{des_id}"}
            ],
            ensure_feature=False,
            poll_seconds=0.05,
            replication_timeout_minutes=0.5,
        )
    )
    vm = create_vm_from_encrypted_image(
        VmFromImageRequest(
            azure_credentials_block=block,
            resource_group="rg-img",
            location="westeurope",
            vm_name="vm1",
            image_version_id=image.id,
            os_disk_encryption_set_id=des_id,
            data_disk_encryption_set_ids=[des_id, des_id],
            ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB test",
        )
    )
    registry = create_encrypted_registry(
        EncryptedRegistryRequest(
            azure_credentials_block=block,
            resource_group="rg-acr",
            location="westeurope",
            registry_name="acrbyok1",
            identity_name="acr-identity",
            vault_name="kv-acr",
            key_name="acr-key",
            key_size=2048,
            propagation_timeout_minutes=0.5,
        )
    )
    return FlowResults(registration, des, cluster, image, vm, registry)


@pytest.fixture(scope="module")
def flows(emulator_session: Emulator, prefect_harness: None) -> FlowResults:
    """The flows, run once for the module against a fresh emulator state."""
    emulator_session.reset()
    credentials = emulator_azure_credentials(emulator_session, polling_interval_seconds=0.02)
    credentials.save(BLOCK, overwrite=True)
    return run_flows(BLOCK, emulator_session)


@pytest.fixture(scope="module")
def az(
    emulator_session: Emulator, flows: FlowResults, tmp_path_factory: pytest.TempPathFactory
) -> Az:
    """The CLI logged in to the emulator by sourcing the lines `byok emulator az-env`
    writes."""
    return logged_in(emulator_session, tmp_path_factory.mktemp("azure-cli"))


def test_account_is_the_emulator_subscription(az: Az, emulator_session: Emulator) -> None:
    account = az("account", "show")
    assert account["id"] == emulator_session.identity.subscription_id
    assert account["tenantId"] == emulator_session.identity.tenant_id
    assert account["environmentName"] == "BYOKEmulator"
    assert account["user"] == {
        "name": emulator_session.identity.client_id,
        "type": "servicePrincipal",
    }


def test_feature_and_provider(az: Az, flows: FlowResults) -> None:
    result = flows.registration
    feature = az("feature", "show", "--namespace", result.namespace, "-n", result.feature)
    assert feature["name"] == f"{result.namespace}/{result.feature}"
    assert feature["properties"]["state"] == result.feature_state == "Registered"
    provider = az("provider", "show", "-n", result.namespace)
    assert provider["namespace"] == result.namespace
    assert provider["registrationState"] == result.provider_state == "Registered"


def test_group(az: Az, flows: FlowResults) -> None:
    des = flows.des.disk_encryption_set
    group = az("group", "show", "-n", "rg-aks")
    assert group["id"] == des.id.split("/providers/")[0]
    assert group["location"] == des.location
    assert group["properties"]["provisioningState"] == "Succeeded"


def test_identity(az: Az, flows: FlowResults) -> None:
    registry = flows.registry.registry
    identity = az("identity", "show", "--ids", flows.registry.identity_id)
    assert identity["id"] == flows.registry.identity_id == registry.identity_id
    assert identity["principalId"] == flows.registry.identity_principal_id
    assert identity["clientId"] == registry.identity_client_id


def test_key_vault_and_key(az: Az, flows: FlowResults) -> None:
    vault, key = flows.des.vault, flows.des.key
    shown = az("keyvault", "show", "-n", vault.name)
    assert (shown["id"], shown["name"], shown["location"]) == (vault.id, vault.name, vault.location)
    assert shown["properties"]["vaultUri"].rstrip("/") == vault.url.rstrip("/")
    assert shown["properties"]["enableRbacAuthorization"] is vault.rbac
    assert shown["properties"]["enablePurgeProtection"] is True
    bundle = az("keyvault", "key", "show", "--id", key.id)
    assert bundle["key"]["kid"] == key.id
    assert bundle["key"]["kty"] == "RSA"
    assert len(base64.b64decode(bundle["key"]["n"])) * 8 == key.size
    assert bundle["attributes"]["enabled"] is True
    versions = az("keyvault", "key", "list-versions", "--id", key.versionless_id)
    assert [v["kid"] for v in versions] == [key.id]
    assert {v["name"] for v in versions} == {key.name}


def test_disk_encryption_set(az: Az, flows: FlowResults) -> None:
    des = flows.des.disk_encryption_set
    shown = az("disk-encryption-set", "show", "--ids", des.id)
    assert (shown["id"], shown["name"], shown["location"]) == (des.id, des.name, des.location)
    assert shown["activeKey"]["keyUrl"] == des.key_url == flows.des.key.id
    assert shown["activeKey"]["sourceVault"]["id"] == flows.des.vault.id
    assert shown["identity"]["principalId"] == des.principal_id
    assert shown["encryptionType"] == des.encryption_type
    assert shown["rotationToLatestKeyVersionEnabled"] is des.rotation_to_latest_key_version


def test_registry_and_its_encryption(az: Az, flows: FlowResults) -> None:
    registry = flows.registry.registry
    shown = az("acr", "show", "-n", registry.name)
    assert (shown["id"], shown["name"], shown["loginServer"]) == (
        registry.id,
        registry.name,
        registry.login_server,
    )
    assert shown["sku"]["name"] == "Premium"
    assigned = shown["identity"]["userAssignedIdentities"][str(registry.identity_id)]
    assert assigned == {
        "principalId": registry.identity_principal_id,
        "clientId": registry.identity_client_id,
    }
    encryption = az("acr", "encryption", "show", "-n", registry.name)
    assert encryption == shown["encryption"]
    assert encryption["status"] == "enabled"
    properties = encryption["keyVaultProperties"]
    assert properties["keyIdentifier"] == registry.key_id
    assert properties["versionedKeyIdentifier"] == registry.versioned_key_id
    assert properties["identity"] == registry.identity_client_id


def test_cluster_and_node_pool(az: Az, flows: FlowResults) -> None:
    cluster = flows.cluster
    group = cluster.id.split("/")[4]
    shown = az("aks", "show", "-g", group, "-n", cluster.name)
    assert (shown["id"], shown["name"], shown["location"]) == (
        cluster.id,
        cluster.name,
        cluster.location,
    )
    assert shown["kubernetesVersion"] == cluster.kubernetes_version
    assert shown["diskEncryptionSetId"] == cluster.disk_encryption_set_id
    assert [p["name"] for p in shown["agentPoolProfiles"]] == cluster.node_pools
    pool = az(
        "aks", "nodepool", "show", "-g", group, "--cluster-name", cluster.name, "-n", "userpool"
    )
    assert pool["id"] == f"{cluster.id}/agentPools/userpool"
    assert (pool["name"], pool["mode"], pool["provisioningState"]) == (
        "userpool",
        "User",
        "Succeeded",
    )


def test_gallery_definition_and_version(az: Az, flows: FlowResults) -> None:
    image = flows.image
    definition_id = image.id.rsplit("/versions/", 1)[0]
    gallery_id = definition_id.rsplit("/images/", 1)[0]
    gallery = az("sig", "show", "--ids", gallery_id)
    assert (gallery["id"], gallery["provisioningState"]) == (gallery_id, "Succeeded")
    definition = az("sig", "image-definition", "show", "--ids", definition_id)
    assert definition["id"] == definition_id
    assert definition["identifier"] == {"publisher": "byok", "offer": "encrypted", "sku": "base"}
    assert (definition["osType"], definition["osState"], definition["hyperVGeneration"]) == (
        "Linux",
        "Generalized",
        "V2",
    )
    version = az("sig", "image-version", "show", "--ids", image.id, "--expand", "ReplicationStatus")
    assert (version["id"], version["name"]) == (image.id, image.name)
    shown_regions = version["publishingProfile"]["targetRegions"]
    assert [r["name"] for r in shown_regions] == [r.name for r in image.regions]
    for shown, region in zip(shown_regions, image.regions, strict=True):
        assert shown["regionalReplicaCount"] == region.replica_count
        encryption = shown["encryption"]
        assert encryption["osDiskImage"]["diskEncryptionSetId"] == region.os_disk_encryption_set_id
        assert {
            d["lun"]: d["diskEncryptionSetId"] for d in encryption["dataDiskImages"]
        } == region.data_disk_encryption_set_ids
    states = {s["region"]: s["state"] for s in version["replicationStatus"]["summary"]}
    assert states == {r.name: r.replication_state for r in image.regions}
    _, _, _, _, group, _, _, _, gallery_name, _, image_name = definition_id.split("/")
    listed = az("sig", "image-version", "list", "-g", group, "-r", gallery_name, "-i", image_name)
    assert [v["id"] for v in listed] == [image.id]


def test_virtual_machine(az: Az, flows: FlowResults) -> None:
    vm = flows.vm
    shown = az("vm", "show", "--ids", vm.id)
    assert shown["id"] == vm.id
    storage = shown["storageProfile"]
    assert storage["osDisk"]["managedDisk"]["diskEncryptionSet"]["id"] == (
        vm.os_disk_encryption_set_id
    )
    assert {
        d["lun"]: d["managedDisk"]["diskEncryptionSet"]["id"] for d in storage["dataDisks"]
    } == vm.data_disk_encryption_set_ids


def test_unsupported_operation_is_an_arm_error_naming_it(az: Az, flows: FlowResults) -> None:
    done = az.run("vm", "restart", "--ids", flows.vm.id)
    assert done.returncode != 0
    assert "(UnsupportedOperation)" in done.stderr and "'restart'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
