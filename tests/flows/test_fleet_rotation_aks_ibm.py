"""KMS clusters and IBM root keys in the fleet rotation, end to end. Clusters (with the
least-privilege principal): the plan lists them, each moves to the key's one new version with
every Secret re-written (the emulator's record of the key each Secret is sealed with), a
cluster that fails half way is a named row (the other cluster goes on), the two-slot rule
holds it back from another rotation, a re-run of the same rotation finishes it without a
second key version, and a vault firewall closed to the clusters holds both back. Root keys:
one rotation, every classic image's wrapped DEK rewrapped and recorded (still unwrapping to
the same DEK), a failed record finished by a re-run without a second rotation, and Key
Protect's one rotation per hour kept."""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.keyvault.models import (
    IPRule,
    NetworkRuleSet,
    VaultPatchParameters,
    VaultPatchProperties,
)
from prefect.blocks.system import Secret

from byok.ibm_dek import META_KEY_VERSION, META_KEYHASH, META_ROOT_KEY, META_WDEK
from byok.ibm_vpc_qemu import encrypt_to_qcow2
from byok.inventory.request import IbmAccountScope
from byok.polling import poll_until
from byok.rotation import FleetRotationRequest
from clients.aks_kubernetes import core_api
from clients.azure import AzureClients
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.server import Emulator
from flows.aks_kms import enable_aks_kms_encryption
from flows.fleet_rotation import rotate_customer_keys
from tests.emulator.test_containerservice import cluster as cluster_body
from tests.flows.test_aks_kms import enable
from tests.flows.test_events import byok_events
from tests.flows.test_fleet_rotation import writes
from tests.helpers import vault_with_key

CLUSTERS = {"aks-a": "apps", "aks-b": "web"}  # cluster: the namespace of its Secrets


def kms_cluster(azure: AzureClients, block: str, name: str, namespace: str, key_id: str) -> Any:
    """A cluster with three Secrets, KMS enabled with `key_id` by the enable flow."""
    clusters = azure.container_service().managed_clusters
    clusters.begin_create_or_update("rg", name, cluster_body(None)).result()
    core = core_api(clusters.list_cluster_user_credentials("rg", name).kubeconfigs[0].value)
    core.create_namespace({"metadata": {"name": namespace}})
    for i in range(3):
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": f"s{i}"}, "stringData": {"v": f"{name}-{i}"}}
        )
    enable_aks_kms_encryption(enable(block, key_id, cluster_name=name))
    return core


def sealed(emulator: Emulator) -> dict[str, set[str | None]]:
    """The key versions each cluster's Secrets are sealed with."""
    kube = emulator.state.kubernetes
    return {
        c.resource_id.rsplit("/", 1)[-1]: set(kube.sealed_with(c).values())
        for c in kube.clusters.values()
    }


def fleet(block: str, **fields: Any) -> FleetRotationRequest:
    return FleetRotationRequest.model_validate(
        {"azure_credentials_block": block, "poll_seconds": 0.05, **fields}
    )


def test_kms_clusters_rotate_fail_alone_are_held_by_two_slots_and_resume(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    vault, v1 = vault_with_key(azure, emulator, "rg", "kv-kms", "kms")
    keys = azure.keys(str(vault.properties.vault_uri))
    cores = {n: kms_cluster(azure, azure_block, n, ns, v1) for n, ns in CLUSTERS.items()}
    assert sealed(emulator) == {"aks-a": {v1}, "aks-b": {v1}}
    ids = {str(c.name): str(c.id) for c in azure.container_service().managed_clusters.list()}

    # dry run: both clusters planned, nothing written
    emulator.requests.clear()
    plan = rotate_customer_keys(fleet(azure_block, plan_only=True, rotation_id="r1"))
    assert writes(emulator) == []
    rows = {r.dependent_id: (r.kind, r.action, r.status) for r in plan.rows}
    planned = ("aks-cluster", "update, re-write Secrets", "planned")
    assert rows == {"": ("key", "new version", "planned")} | {i: planned for i in ids.values()}

    # aks-a's Secret s1 cannot be re-written: its row fails, aks-b moves all the same
    emulator.faults.add(
        Fault("status", method="PUT", path="/namespaces/apps/secrets/s1$", status=403, count=None)
    )
    state = rotate_customer_keys(fleet(azure_block, rotation_id="r1"), return_state=True)
    emulator.faults.clear()
    assert state.is_failed() and ids["aks-a"] in str(state.message)
    versions = [str(p.id) for p in keys.list_properties_of_key_versions("kms")]
    (v2,) = set(versions) - {v1}
    now = sealed(emulator)
    assert now["aks-b"] == {v2} and now["aks-a"] == {v1, v2}  # s0 re-written, s1 not
    found = azure.container_service().managed_clusters.get("rg", "aks-a")
    assert found.properties.security_profile.azure_key_vault_kms.key_id == v2

    # another rotation now would leave aks-a with two key slots in use: held, a named row
    other = rotate_customer_keys(fleet(azure_block, plan_only=True, rotation_id="r2"))
    (held,) = [r for r in other.rows if r.dependent_id == ids["aks-a"]]
    assert held.status == "failed" and "may still be sealed with the previous key" in held.reason
    assert [r.status for r in other.rows if r.dependent_id == ids["aks-b"]] == ["planned"]

    # the re-run of r1 finishes aks-a, with no second version and aks-b untouched
    puts_b = len(emulator.requests.find("PUT", "/namespaces/web/secrets/"))
    done = rotate_customer_keys(fleet(azure_block, rotation_id="r1"))
    assert len(list(keys.list_properties_of_key_versions("kms"))) == 2
    assert sealed(emulator) == {"aks-a": {v2}, "aks-b": {v2}}
    assert len(emulator.requests.find("PUT", "/namespaces/web/secrets/")) == puts_b
    result = {r.dependent_id: (r.status, r.reason, r.version) for r in done.rows}
    assert result == {
        "": ("rotated", "resuming rotation r1", v2),
        ids["aks-a"]: ("verified", "2 Secret(s) re-written", v2),
        ids["aks-b"]: ("verified", "0 Secret(s) re-written", v2),
    }
    for name, namespace in CLUSTERS.items():  # the data survived
        secret = cores[name].read_namespaced_secret("s2", namespace)
        assert secret.data["v"]

    # a firewall closes kv-kms to the clusters' public KMS plugins (this client admitted): a
    # rotation would leave them Failed, so both are held back, read only
    rules = NetworkRuleSet(
        default_action="Deny", bypass="AzureServices", ip_rules=[IPRule(value="127.0.0.1")]
    )
    patch = VaultPatchParameters(properties=VaultPatchProperties(network_acls=rules))
    azure.keyvault_management().vaults.update("rg", "kv-kms", patch)
    emulator.requests.clear()
    closed = rotate_customer_keys(fleet(azure_block, plan_only=True, rotation_id="r3"))
    assert writes(emulator) == []
    held_back = {r.dependent_id: r for r in closed.rows if r.kind == "aks-cluster"}
    assert set(held_back) == set(ids.values())
    assert all(
        r.status == "failed" and "has a firewall (default action Deny)" in r.reason
        for r in held_back.values()
    ), held_back


def test_a_vault_closed_after_the_check_leaves_its_cluster_on_the_old_version(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    """The vault closes to the cluster's plugin after the plan's check and before the move:
    the move checks again under the cluster's lock, so the cluster is a failed row with the
    reason, still on the old version with every Secret sealed with it."""
    vault, v1 = vault_with_key(azure, emulator, "rg", "kv-late", "late")
    kms_cluster(azure, azure_block, "aks-late", "late", v1)
    vaults = azure.keyvault_management().vaults
    emulator.requests.clear()
    # the new version's answer is held back 3 s: the vault closes meanwhile, once checked
    emulator.faults.add(Fault("latency", method="POST", path="/keys/late/create$", seconds=3))

    def close_when_checked() -> None:
        poll_until(
            lambda: "read" if emulator.requests.find("GET", "/vaults/kv-late$") else "unread",
            frozenset({"read"}),
            timeout_seconds=60,
            interval_seconds=0.02,
            what="the plan's read of the vault",
        )
        rules = NetworkRuleSet(default_action="Deny", ip_rules=[IPRule(value="127.0.0.1")])
        vaults.update(
            "rg",
            "kv-late",
            VaultPatchParameters(properties=VaultPatchProperties(network_acls=rules)),
        )

    closer = threading.Thread(target=close_when_checked)
    closer.start()
    state = rotate_customer_keys(
        fleet(azure_block, key_vaults=["kv-late"], rotation_id="late"), return_state=True
    )
    closer.join(60)
    cluster_id = str(azure.container_service().managed_clusters.get("rg", "aks-late").id)
    assert state.is_failed(), state.message
    assert f"{cluster_id}: " in str(state.message)
    assert "has a firewall (default action Deny)" in str(state.message)
    keys = azure.keys(str(vault.properties.vault_uri))
    assert len(list(keys.list_properties_of_key_versions("late"))) == 2  # the key rotated
    found = azure.container_service().managed_clusters.get("rg", "aks-late")
    assert found.properties.security_profile.azure_key_vault_kms.key_id == v1
    assert sealed(emulator)["aks-late"] == {v1}
    assert not [w for w in writes(emulator) if "managedClusters" in w or "/secrets/" in w]


@pytest.mark.slow
def test_kms_clusters_rotate_on_a_local_dask_cluster(
    azure_block: str, azure: AzureClients, emulator: Emulator
) -> None:
    """A KMS cluster's move (update, every Secret re-written) runs on a Dask worker."""
    _, v1 = vault_with_key(azure, emulator, "rg", "kv-kms-dask", "kms")
    kms_cluster(azure, azure_block, "aks-dask", "jobs", v1)
    done = rotate_customer_keys(
        fleet(azure_block, task_runner="dask", dask_workers=1, key_vaults=["kv-kms-dask"])
    )
    (v2,) = {r.version for r in done.rows}
    assert v2 != v1 and sealed(emulator)["aks-dask"] == {v2}
    assert [(r.kind, r.status) for r in done.rows] == [
        ("key", "rotated"),
        ("aks-cluster", "verified"),
    ]


BUCKET, IMAGES = "fleet-images", ("img-a.vhd", "img-b.vhd")


def classic_image(kp: Any, s3: Any, bucket: str, name: str, root: dict) -> dict:
    """A classic image in COS: a DEK wrapped by `root`, in the object's byok metadata.
    Returns Key Protect's wrap answer (the plaintext DEK and the version)."""
    wrapped = kp.wrap(root["id"])
    meta = {
        META_KEYHASH: "h",
        META_ROOT_KEY: root["crn"],
        META_WDEK: wrapped["ciphertext"],
        META_KEY_VERSION: wrapped["keyVersion"]["id"],
    }
    s3.put_object(Bucket=bucket, Key=name, Body=b"image", Metadata=meta)
    return dict(wrapped)


def ibm_scope(ibm_block: str, emulator: Emulator, bucket: str) -> IbmAccountScope:
    ids = emulator.ibm_identity
    return IbmAccountScope(
        ibm_credentials_block=ibm_block,
        key_protect_instances=[ids.key_protect_instance],
        cos_instance_id=ids.cos_instance,
        buckets=[bucket],
    )


def vpc_image(ibm: IBMClients, kp: Any, grant: Any, tmp: Path, instance: str) -> tuple[Any, str]:
    """A root key and a VPC image imported under it (registered with the key)."""
    root = kp.create_key("fleet-vpc")
    passphrase = b"correct horse battery staple 0123"
    raw = tmp / "disk.raw"
    raw.write_bytes(os.urandom(64 * 1024) + bytes(1024 * 1024))
    encrypt_to_qcow2(raw, tmp / "disk.qcow2", passphrase, "raw", iter_time_ms=10)
    ibm.cos().put_object(Bucket=BUCKET, Key="disk.qcow2", Body=(tmp / "disk.qcow2").read_bytes())
    grant(None, "kms", "Reader", source="server-protect", serviceInstance=instance)
    grant(None, "cloud-object-storage", "Reader", source="is")
    image = (
        ibm.vpc()
        .create_image(
            image_prototype={
                "name": "fleet-vpc-image",
                "file": {"href": f"cos://us-south/{BUCKET}/disk.qcow2"},
                "operating_system": {"name": "ubuntu-22-04-amd64"},
                "encrypted_data_key": kp.wrap(root["id"], base64.b64encode(passphrase).decode())[
                    "ciphertext"
                ],
                "encryption_key": {"crn": root["crn"]},
            }
        )
        .get_result()
    )
    deadline = time.monotonic() + 30  # the import settles (read), then the image is registered
    while ibm.vpc().get_image(id=image["id"]).get_result()["status"] == "pending":
        assert time.monotonic() < deadline, "the VPC image import did not settle"
        time.sleep(0.1)
    assert kp.registrations(root["id"])
    return root, str(image["crn"])


def one_image_key(
    ibm: IBMClients, emulator: Emulator, ibm_block: str, name: str, **create: Any
) -> tuple[Any, Any, dict, dict, dict[str, Any]]:
    """A root key `name` (created with `create`), a bucket `name` with one classic image
    wrapped by it, and the fleet selection of that key: (kp, s3, root, wrap answer, asked)."""
    ids = emulator.ibm_identity
    kp, s3 = ibm.key_protect(ids.key_protect_instance), ibm.cos(ids.cos_instance)
    root = kp.create_key(name, **create)
    s3.create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    wrapped = classic_image(kp, s3, name, "img.vhd", root)
    asked = {
        "ibm_accounts": [ibm_scope(ibm_block, emulator, name).model_dump()],
        "root_keys": [root["id"]],
    }
    return kp, s3, root, wrapped, asked


def test_ibm_root_keys_rotate_once_rewrap_every_image_and_resume(
    azure_block: str,
    ibm_block: str,
    ibm: IBMClients,
    emulator: Emulator,
    ibm_grant: Any,
    tmp_path: Path,
) -> None:
    ids = emulator.ibm_identity
    kp, s3 = ibm.key_protect(ids.key_protect_instance), ibm.cos(ids.cos_instance)
    root = kp.create_key("fleet-root")
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    deks = {n: classic_image(kp, s3, BUCKET, n, root)["plaintext"] for n in IMAGES}
    vpc_root, vpc_crn = vpc_image(ibm, kp, ibm_grant, tmp_path, ids.key_protect_instance)
    scope = ibm_scope(ibm_block, emulator, BUCKET)
    asked = {"ibm_accounts": [scope.model_dump()], "root_keys": [root["crn"], vpc_root["id"]]}
    uris = {f"cos://{ids.region}/{BUCKET}/{n}" for n in IMAGES}

    def version(key: dict = root) -> str:
        return str(kp.get_key(key["id"])["keyVersion"]["id"])

    def recorded(name: str) -> dict[str, str]:
        return s3.head_object(Bucket=BUCKET, Key=name)["Metadata"]

    def rows(result: Any) -> dict[tuple[str, str], tuple[str, str, str]]:
        return {(r.key_id, r.dependent_id): (r.status, r.reason, r.version) for r in result.rows}

    v1, vpc_v1 = version(), version(vpc_root)
    plan = rotate_customer_keys(fleet(azure_block, plan_only=True, **asked))
    assert {(r.key_id, r.dependent_id, r.action, r.status) for r in plan.rows} == {
        (root["crn"], "", "rotate", "planned"),
        (vpc_root["crn"], "", "rotate", "planned"),
        (vpc_root["crn"], vpc_crn, "verify re-wrap", "planned"),
    } | {(root["crn"], u, "rewrap, record", "planned") for u in uris}
    assert (version(), version(vpc_root)) == (v1, vpc_v1)

    # img-b's record fails: its row names it; img-a is rewrapped and recorded, the VPC image
    # re-wrapped by VPC itself
    emulator.faults.add(
        Fault("status", "PUT", rf"^/{BUCKET}/img-b.vhd$", status=400, code="InjectedCrash")
    )
    state = rotate_customer_keys(fleet(azure_block, **asked), return_state=True)
    emulator.faults.clear()
    assert state.is_failed() and "img-b.vhd" in str(state.message)
    v2, vpc_v2 = version(), version(vpc_root)
    assert v2 != v1 and vpc_v2 != vpc_v1
    assert (recorded("img-a.vhd")[META_KEY_VERSION], recorded("img-b.vhd")[META_KEY_VERSION]) == (
        v2,
        v1,
    )
    registered = kp.registrations(vpc_root["id"])
    assert [r["keyVersion"]["id"] for r in registered] == [vpc_v2]

    # the re-run finishes img-b without a second rotation; the VPC key's re-wrap is verified
    since = time.time() - 1
    done = rows(rotate_customer_keys(fleet(azure_block, **asked)))
    (event,) = byok_events(since, [root["crn"]])  # once every image of the key moved
    assert (event["event"], event["payload"]["new_version"]) == ("byok.key.rotated", v2)
    assert {r["byok.id"] for r in event["related"] if "byok.id" in r} == uris
    assert (version(), version(vpc_root)) == (v2, vpc_v2)
    uri = f"cos://{ids.region}/{BUCKET}/"
    assert done[(root["crn"], "")][::2] == ("rotated", v2)
    assert done[(root["crn"], uri + "img-a.vhd")] == ("verified", "already on the new version", v2)
    assert done[(root["crn"], uri + "img-b.vhd")] == ("verified", "", v2)
    assert done[(vpc_root["crn"], "")][0] == "rotated"
    assert done[(vpc_root["crn"], "")][1].startswith("resuming: rotated at")
    assert done[(vpc_root["crn"], vpc_crn)][0] == "verified"
    for name in IMAGES:  # recorded under v2, still the same DEK
        meta = recorded(name)
        assert meta[META_KEY_VERSION] == v2
        assert kp.unwrap(root["id"], meta[META_WDEK])["plaintext"] == deks[name]

    # later the same day, the same rotation resumes: both keys rotated today are verified,
    # not rotated again (Key Protect keys carry no tags: the rotation's day stands for its id)
    emulator.state.keyvault.clock.advance(2 * 3600)
    again = rows(rotate_customer_keys(fleet(azure_block, **asked)))
    assert (version(), version(vpc_root)) == (v2, vpc_v2)
    assert again[(root["crn"], "")][0] == "rotated" and "resuming" in again[(root["crn"], "")][1]
    assert again[(vpc_root["crn"], vpc_crn)][0] == "verified"
    assert {again[(root["crn"], u)] for u in uris} == {
        ("verified", "already on the new version", v2)
    }


def test_an_imported_root_key_rotates_with_the_material_its_block_holds(
    azure_block: str, ibm_block: str, ibm: IBMClients, emulator: Emulator
) -> None:
    material = base64.b64encode(os.urandom(32)).decode()
    kp, s3, root, wrapped, asked = one_image_key(
        ibm, emulator, ibm_block, "fleet-imported", payload=material
    )
    bucket = "fleet-imported"
    v1 = kp.get_key(root["id"])["keyVersion"]["id"]

    # without new material: a failed row naming the field, nothing rotated
    state = rotate_customer_keys(fleet(azure_block, **asked), return_state=True)
    assert state.is_failed() and "root_key_material_blocks" in str(state.message)
    assert kp.get_key(root["id"])["keyVersion"]["id"] == v1

    Secret(value=base64.b64encode(os.urandom(32)).decode()).save("kp-material", overwrite=True)
    done = rotate_customer_keys(
        fleet(azure_block, root_key_material_blocks={root["crn"]: "kp-material"}, **asked)
    )
    v2 = kp.get_key(root["id"])["keyVersion"]["id"]
    assert v2 != v1
    assert [(r.dependent_id.rsplit("/", 1)[-1], r.status) for r in done.rows] == [
        ("", "rotated"),
        ("img.vhd", "verified"),
    ]
    recorded = s3.head_object(Bucket=bucket, Key="img.vhd")["Metadata"]
    assert recorded[META_KEY_VERSION] == v2
    assert kp.unwrap(root["id"], recorded[META_WDEK])["plaintext"] == wrapped["plaintext"]


@pytest.mark.slow
def test_ibm_root_keys_rotate_on_a_local_dask_cluster(
    azure_block: str, ibm_block: str, ibm: IBMClients, emulator: Emulator
) -> None:
    """The IBM part runs on Dask workers (other processes: blocks loaded from the server)."""
    kp, s3, root, wrapped, asked = one_image_key(ibm, emulator, ibm_block, "fleet-dask")
    asked["key_vaults"] = ["no-such-vault"]  # IBM keys only
    bucket = "fleet-dask"
    done = rotate_customer_keys(fleet(azure_block, task_runner="dask", dask_workers=1, **asked))
    v2 = kp.get_key(root["id"])["keyVersion"]["id"]
    assert v2 != wrapped["keyVersion"]["id"]
    assert [(r.kind, r.status) for r in done.rows] == [
        ("key", "rotated"),
        ("ibm-image", "verified"),
    ]
    recorded = s3.head_object(Bucket=bucket, Key="img.vhd")["Metadata"]
    assert recorded[META_KEY_VERSION] == v2
