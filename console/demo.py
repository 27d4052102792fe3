"""`byok demo`: the emulator, a local Prefect server, and the procedures run end to end
against them, without a cloud account."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK_POOL = "byok-process"
DEMO_BLOCK = "emulator-azure"
DEMO_IBM_BLOCK = "emulator-ibm"
WORKER_STOP_SECONDS = 15  # to stop on SIGTERM, then the worker is killed


def register(subparsers: Any) -> None:
    """Add `byok demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="run every procedure against the local emulator with a local Prefect server",
        description=__doc__,
    )
    parser.add_argument("--port", type=int, default=4200, help="Prefect server port")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="PREFECT_HOME of the demo server (default: a temporary folder)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the Prefect server and the emulator up until Ctrl-C",
    )
    parser.set_defaults(func=run_demo)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@contextmanager
def prefect_server(home: Path, port: int) -> Iterator[str]:
    """A `prefect server start` subprocess on SQLite under `home`; yields the API URL."""
    if not _free(port):
        raise SystemExit(f"byok demo: port {port} is busy; pass --port")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
        # the UI's own API address: its default names port 4200 whatever --port says
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    log = open(home / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        umask=0o077,  # prefect.db and its journal 0600 from the first byte
        start_new_session=True,  # out of reach of the terminal's Ctrl-C: see process_worker
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(api + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"byok demo: the Prefect server did not start; see {home / 'server.log'}"
                )
            time.sleep(0.5)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def run_demo(args: argparse.Namespace) -> int:
    """Start everything, run the procedures, print what was created. The emulator is
    published where `byok emulator …` finds it until the demo ends."""
    from console.emulator_cli import DEFAULT_STATE_DIR, claim, publish, retract
    from emulator.server import Emulator

    _stop_on_signals()
    DEFAULT_STATE_DIR.mkdir(parents=True, exist_ok=True)
    claim(DEFAULT_STATE_DIR)
    with tempfile.TemporaryDirectory(prefix="byok-demo-") as tmp:
        home = args.home or Path(tmp) / "prefect"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)  # the database holds the blocks and the key that decrypts them
        print("Starting the cloud emulator and a local Prefect server…", flush=True)
        with (
            Emulator(state_dir=DEFAULT_STATE_DIR) as emulator,
            prefect_server(home, args.port) as api,
        ):
            publish(emulator, DEFAULT_STATE_DIR)
            try:
                _demo(args, emulator, api)
            finally:
                retract(DEFAULT_STATE_DIR)
    return 0


def _demo(args: argparse.Namespace, emulator: Any, api: str) -> None:
    from console.emulator_cli import DEFAULT_STATE_DIR, az_env_hint

    os.environ["PREFECT_API_URL"] = api
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}):
        summary = run_procedures(emulator)
        summary.append(request_counts(emulator))
        drain_prefect_workers()  # before the server goes away
    deployed = deploy_all(api)
    ui = api.removesuffix("/api")
    print("\n".join(summary))
    print(f"  {deployed} deployments in work pool {WORK_POOL} (deployments/prefect.yaml)")
    print(
        f"\nPrefect UI: {ui}  (flow runs, task runs, logs, deployments, the blocks "
        f"'{DEMO_BLOCK}' and '{DEMO_IBM_BLOCK}')"
        + ("" if args.keep_running else "; it stops with the demo: --keep-running keeps it")
    )
    print(
        f"Emulator: `byok emulator endpoints|requests|fault|reset` drive it; "
        f"{az_env_hint(DEFAULT_STATE_DIR)}",
        flush=True,
    )
    if args.keep_running:
        with process_worker(api):
            print(
                "Keeping the server, a worker and the emulator up: run deployments "
                "from the UI. Ctrl-C stops them.",
                flush=True,
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("Stopping the worker, the Prefect server and the emulator…", flush=True)


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT), `kill` (SIGTERM) and a closed terminal (SIGHUP: it no longer reaches
    the server and the worker, in sessions of their own) stop the demo and them cleanly, even
    where it started with SIGINT ignored, as a script's background jobs start (Python then
    never turns it into KeyboardInterrupt: the demo ignored Ctrl-C). Set before the server
    and the worker start: an ignored signal stays ignored in a child, a handled one is
    reset."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop)


def _prefect_env(api: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": api,
        "BYOK_FLOWS_DIR": str(ROOT),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def deploy_all(api: str) -> int:
    """Create the process work pool and every deployment of deployments/prefect.yaml, as a
    user does with the prefect CLI; returns how many deployments there are."""
    prefect = [sys.executable, "-m", "prefect"]
    env = _prefect_env(api)
    subprocess.run(
        [*prefect, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
    )
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    return len(spec["deployments"])


@contextmanager
def process_worker(api: str) -> Iterator[None]:
    """A process worker polling the demo's work pool.

    The worker and the server run in sessions of their own, so that Ctrl-C (which a terminal
    sends to its whole process group) reaches only the demo, which stops the worker first and
    the server after it: a worker whose server went first could not report the run it was
    finishing (seen in the tests' logs)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL],
        env=_prefect_env(api),
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def drain_prefect_workers() -> None:
    """Send the logs and events still queued in this process to the API."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def run_procedures(emulator: Any) -> list[str]:
    """Run each procedure's flow against the emulator; returns summary lines."""
    from console.demo_key_sources import key_sources_demo
    from console.emulator_blocks import save_emulator_block
    from flows.acr import EncryptedRegistryRequest, create_encrypted_registry
    from flows.aks import (
        AksClusterRequest,
        DataDiskEncryptionRequest,
        NodePoolRequest,
        add_encrypted_node_pool,
        create_encrypted_aks_cluster,
        encrypt_aks_data_disks,
    )
    from flows.disk_encryption_set import DiskEncryptionSetRequest, prepare_disk_encryption_set
    from flows.registration import FeatureRegistrationRequest, ensure_feature_registration

    save_emulator_block(emulator, DEMO_BLOCK)
    emulator.arm.configure_feature("Microsoft.Compute", "SIGEncryption", polls=3)
    emulator.arm.configure_feature("Microsoft.Compute", "EncryptionAtHost", polls=1)
    emulator.arm.configure_provider("Microsoft.Compute", "NotRegistered", polls=2)
    feature = ensure_feature_registration(
        FeatureRegistrationRequest(
            azure_credentials_block=DEMO_BLOCK,
            poll_seconds=0.5,
            timeout_minutes=2,
        )
    )
    common = {"azure_credentials_block": DEMO_BLOCK, "resource_group": "rg-byok-demo"}
    prepared = prepare_disk_encryption_set(
        DiskEncryptionSetRequest(
            **common,
            location="westeurope",
            vault_name="kv-byok-demo",
            key_name="des-key",
            des_name="des-byok-demo",
        )
    )
    des = prepared.disk_encryption_set
    cluster = create_encrypted_aks_cluster(
        AksClusterRequest(
            **common,
            location="westeurope",
            cluster_name="aks-byok-demo",
            disk_encryption_set_id=des.id,
            enable_encryption_at_host=True,
        )
    )
    with_pool = add_encrypted_node_pool(
        NodePoolRequest(
            **common,
            cluster_name=cluster.name,
            pool_name="userpool",
            disk_encryption_set_id=des.id,
        )
    )
    storage = encrypt_aks_data_disks(
        DataDiskEncryptionRequest(
            **common,
            cluster_name=cluster.name,
            disk_encryption_set_id=des.id,
        )
    )
    image = publish_demo_image(emulator, des.id)
    registry = create_encrypted_registry(
        EncryptedRegistryRequest(
            **common,
            location="westeurope",
            registry_name="acrbyokdemo",
            identity_name="id-acr-byok-demo",
            vault_name="kv-acr-byok-demo",
            key_name="acr-key",
        )
    ).registry
    access = "RBAC" if prepared.vault.rbac else "access policies"
    return [
        "Procedures run against the emulator:",
        f"  A1-A3 feature {feature.namespace}/{feature.feature}: {feature.feature_state}; "
        f"provider {feature.namespace}: {feature.provider_state}",
        f"  C1-C4 key vault {prepared.vault.name} ({access}), key {prepared.key.id}",
        f"        disk encryption set {des.name}, identity {des.principal_id}",
        f"  C5-C6 AKS cluster {cluster.name} (Kubernetes {cluster.kubernetes_version}) with "
        f"OS disks on {des.name}; node pools {', '.join(with_pool.node_pools)} (encryption "
        f"at host: {', '.join(cluster.host_encrypted_pools)})",
        f"  C7    StorageClass byok-azure-disk for data disks: {storage}",
        *kms_demo(emulator, cluster.name, prepared.vault.url),
        f"  A4-A5 image version {image['version']} replicated to "
        f"{', '.join(image['regions'])}, OS and data disks on {des.name}",
        f"  A6    VM {image['vm']} with every disk on {des.name}",
        f"  B1-B8 registry {registry.login_server} encrypted with {registry.key_id} "
        f"(identity {registry.identity_client_id})",
        *provision_demo_ibm_image(emulator),
        *provision_demo_vpc_image(emulator),
        *inventory_demo_fleet(emulator, prepared.key.id),
        rotate_demo_fleet(),
        drill_demo_key(prepared.key.versionless_id),
        *key_sources_demo(emulator, DEMO_BLOCK),
    ]


def kms_demo(emulator: Any, cluster: str, vault_url: str) -> list[str]:
    """KMS etcd encryption of the demo cluster with a key of its own (the set's key is
    revoked by the drill later): three workload Secrets, enabled, then rotated with every
    Secret re-encrypted."""
    from byok.aks_kms import EnableKmsRequest, RotateKmsRequest
    from clients.aks_kubernetes import core_api
    from clients.azure import AzureClients
    from console.emulator_blocks import emulator_azure_credentials
    from flows.aks_kms import enable_aks_kms_encryption, rotate_aks_kms_key

    clients = AzureClients.of(emulator_azure_credentials(emulator))
    key = clients.keys(vault_url).create_rsa_key("kms-key", size=2048)
    clusters = clients.container_service().managed_clusters
    found = clusters.list_cluster_user_credentials("rg-byok-demo", cluster).kubeconfigs or []
    core = core_api(found[0].value or b"")
    for name in ("db-password", "api-token", "tls-key"):
        core.create_namespaced_secret(
            "default", {"metadata": {"name": name}, "stringData": {"value": f"demo-{name}"}}
        )
    common = {
        "azure_credentials_block": DEMO_BLOCK,
        "resource_group": "rg-byok-demo",
        "cluster_name": cluster,
    }
    enabled = enable_aks_kms_encryption(
        EnableKmsRequest(**common, key_id=str(key.id), propagation_timeout_minutes=1)
    )
    rotated = rotate_aks_kms_key(RotateKmsRequest(**common, rotation_id="demo-rotation"))
    return [
        f"  K1    KMS etcd encryption of {cluster} with {key.name} version "
        f"{_short(enabled.key_version)}: {enabled.secrets_rewritten} Secrets encrypted",
        f"  K2    KMS key rotated to {_short(rotated.key_version)} (previous "
        f"{_short(str(rotated.previous_key_version))} recorded): {rotated.secrets_rewritten} "
        "Secrets re-encrypted, none left on the old version",
    ]


def _short(key_id: str) -> str:
    """A key version, shortened for a summary line."""
    return key_id.rsplit("/", 1)[1][:8]


def drill_demo_key(key_id: str) -> str:
    """The revocation drill on the set's key: disabled, every dependent seen failing (the
    VM stops), restored, every dependent seen recovering."""
    from byok.drill import RevocationDrillRequest
    from byok.keyvault_ids import KeyId
    from flows.revocation_drill import revocation_drill

    result = revocation_drill(
        RevocationDrillRequest(
            azure_credentials_block=DEMO_BLOCK,
            key_id=key_id,
            confirm=KeyId.parse(key_id).name,
            timeout_minutes=2,
        )
    )
    proved = sum(r.verdict == "proved" for r in result.rows)
    return (
        f"  Revocation drill on {key_id}: {proved} dependents seen failing and recovering, "
        f"{len(result.rows) - proved - len(result.failed)} with no observable state, "
        f"{len(result.failed)} failed (artifact revocation-drill-{KeyId.parse(key_id).name})"
    )


def rotate_demo_fleet() -> str:
    """The fleet rotation over every key the demo's sets and registries use."""
    from byok.rotation import FleetRotationRequest, Status
    from flows.fleet_rotation import rotate_customer_keys

    result = rotate_customer_keys(
        FleetRotationRequest(
            azure_credentials_block=DEMO_BLOCK, poll_seconds=0.5, pickup_timeout_minutes=2
        )
    )
    moved = sum(r.status == Status.VERIFIED for r in result.rows)
    return (
        f"  Fleet rotation {result.rotation_id}: {result.keys_rotated} keys at a new version, "
        f"{moved} sets and registries verified on it (artifact customer-key-rotation)"
    )


def request_counts(emulator: Any) -> str:
    """How many requests the procedures cost, token requests apart (the figure that one client
    context per flow run keeps low)."""
    served = emulator.requests.find()
    tokens = [r for r in served if r.path.endswith(("/oauth2/v2.0/token", "/identity/token"))]
    return f"  The emulator served {len(served)} requests, {len(tokens)} of them for tokens"


def inventory_demo_fleet(emulator: Any, des_key_id: str) -> list[str]:
    """The inventory after the procedures (Azure and the IBM account), with a platform-key
    disk in a second subscription (a non-compliant resource), and the blast radius of the set's
    key."""
    from byok.inventory.request import BlastRadiusRequest, IbmAccountScope, InventoryRequest
    from clients.azure import AzureClients
    from console.emulator_blocks import emulator_azure_credentials
    from flows.blast_radius import key_blast_radius
    from flows.inventory import inventory_customer_managed_keys

    team = emulator.state.add_subscription(name="team-b")
    clients = AzureClients.of(emulator_azure_credentials(emulator), team)
    clients.resources().resource_groups.create_or_update("rg-team-b", {"location": "westeurope"})
    clients.compute().disks.begin_create_or_update(
        "rg-team-b",
        "disk-platform-key",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 4},
        },
    ).result()
    ibm = [
        IbmAccountScope(
            ibm_credentials_block=DEMO_IBM_BLOCK,
            key_protect_instances=[emulator.ibm_identity.key_protect_instance],
        )
    ]
    found = inventory_customer_managed_keys(
        InventoryRequest(azure_credentials_block=DEMO_BLOCK, ibm_accounts=ibm)
    )
    blast = key_blast_radius(
        BlastRadiusRequest(azure_credentials_block=DEMO_BLOCK, key_id=des_key_id.rsplit("/", 1)[0])
    )
    return [
        f"  Inventory: {found.resources} resources in 2 subscriptions and 1 IBM account, "
        f"{found.rows} evidence "
        f"rows, {found.non_compliant} non-compliant (artifact customer-key-inventory)",
        f"  Blast radius of {des_key_id.rsplit('/', 1)[0]}: {len(blast.dependents)} dependents "
        "(artifact key-blast-radius)",
    ]


def provision_demo_ibm_image(emulator: Any) -> list[str]:
    """Procedure D on the emulator: the seeded unencrypted template, encrypted and imported,
    and a virtual server ordered from it."""
    from byok.ibm_models import IbmImageRequest, VirtualServerOrder
    from console.emulator_blocks import save_emulator_ibm_block
    from emulator.services.softlayer.models import SEED_TEMPLATE_ID
    from flows.ibm_image import provision_encrypted_ibm_image

    save_emulator_ibm_block(emulator, DEMO_IBM_BLOCK)
    ibm = emulator.ibm_identity
    result = provision_encrypted_ibm_image(
        IbmImageRequest(
            ibm_credentials_block=DEMO_IBM_BLOCK,
            key_protect_instance_id=ibm.key_protect_instance,
            root_key="byok-demo-root",
            cos_instance_id=ibm.cos_instance,
            bucket="byok-demo-images",
            source_template_id=SEED_TEMPLATE_ID,
            image_name="byok-demo-encrypted",
            os_reference_code="UBUNTU_22_64",
            poll_seconds=0.5,
            order=VirtualServerOrder(
                hostname="byok-demo", domain="example.com", datacenter="dal10"
            ),
        )
    )
    return [
        f"  D1-D4 Key Protect root key {result.root_key_id}, bucket {result.bucket}",
        f"  D5-D8 template {SEED_TEMPLATE_ID} exported, encrypted (keyhash "
        f"{(result.keyhash or '')[:16]}…), uploaded to {result.object_uri}",
        f"  D9-D11 image template {result.template_id} imported encrypted; virtual server "
        f"{result.instance.id if result.instance else '-'} ordered",
    ]


def provision_demo_vpc_image(emulator: Any) -> list[str]:
    """The VPC procedure on the emulator: a small disk encrypted as a LUKS qcow2 by qemu-img,
    imported under the Key Protect root key, and an instance from it."""
    from byok.ibm_vpc import VpcImageRequest, VpcInstanceSpec
    from flows.ibm_vpc_image import provision_encrypted_vpc_image

    ibm = emulator.ibm_identity
    with tempfile.TemporaryDirectory(prefix="byok-demo-vpc-") as tmp:
        source = Path(tmp) / "disk.raw"
        source.write_bytes(b"byok demo disk\n".ljust(64 * 1024, b"\0") + bytes(960 * 1024))
        result = provision_encrypted_vpc_image(
            VpcImageRequest(
                ibm_credentials_block=DEMO_IBM_BLOCK,
                key_protect_instance_id=ibm.key_protect_instance,
                root_key="byok-demo-vpc-root",
                cos_instance_id=ibm.cos_instance,
                bucket="byok-demo-vpc-images",
                object_key="byok-demo-vpc.qcow2",
                source_file=str(source),
                image_name="byok-demo-vpc",
                operating_system="ubuntu-22-04-amd64",
                instance=VpcInstanceSpec(
                    name="byok-demo-vsi",
                    zone="us-south-1",
                    vpc_name="byok-demo-vpc",
                    subnet_name="byok-demo-subnet",
                ),
                luks_iter_time_ms=100,
                poll_seconds=0.5,
            )
        )
    return [
        f"  VPC   LUKS qcow2 {result.object_uri} imported as image {result.image_id} "
        f"({result.image_status}) under root key {result.root_key_crn}; instance "
        f"{result.instance_id} {result.instance_status}"
    ]


def publish_demo_image(emulator: Any, des_id: str) -> dict[str, Any]:
    """Procedure A on the emulator: a source image, an encrypted version, a VM from it."""
    from clients.azure import AzureClients
    from console.emulator_blocks import emulator_azure_credentials
    from flows.gallery import ImageVersionRequest, publish_encrypted_image_version
    from flows.virtual_machine import VmFromImageRequest, create_vm_from_encrypted_image

    # the source a user already has: a managed image with one data disk
    clients = AzureClients.of(emulator_azure_credentials(emulator))
    source = (
        clients.compute()
        .images.begin_create_or_update(
            "rg-byok-demo",
            "ubuntu-src",
            {
                "location": "westeurope",
                "properties": {
                    "storageProfile": {
                        "osDisk": {"osType": "Linux", "osState": "Generalized"},
                        "dataDisks": [{"lun": 0}],
                    }
                },
            },
        )
        .result()
    )
    common = {
        "azure_credentials_block": DEMO_BLOCK,
        "resource_group": "rg-byok-demo",
        "location": "westeurope",
    }
    version = publish_encrypted_image_version(
        ImageVersionRequest(
            **common,
            gallery_name="byok_demo_gallery",
            image_name="ubuntu",
            version="1.0.0",
            source={"managed_image_id": source.id},
            ensure_feature=False,
            poll_seconds=0.5,
            target_regions=[{"name": "westeurope", "encryption": f"{des_id},0,{des_id}"}],
        )
    )
    vm = create_vm_from_encrypted_image(
        VmFromImageRequest(
            **common,
            vm_name="vm-byok-demo",
            image_version_id=version.id,
            os_disk_encryption_set_id=des_id,
            data_disk_encryption_set_ids=[des_id],
            ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyForTheEmulatorOnly demo",
        )
    )
    return {
        "version": version.name,
        "regions": [r.name for r in version.regions],
        "vm": vm.id.rsplit("/", 1)[1],
    }
