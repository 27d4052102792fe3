"""Disk encryption set steps: validate a request, create the set (or adopt it, a Failed one
included), apply its key once its identity's access is effective, rotate its key, verify
it; check sets others name (gallery image versions, VMs)."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    DiskEncryptionSetUpdateProperties,
    KeyForDiskEncryptionSet,
)
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id
from prefect import get_run_logger, task

from blocks.azure import AzureCredentials
from byok.azure_errors import (
    as_byok_error,
    is_azure_error,
    is_failed_operation,
    is_propagation_delay,
    named_failure,
)
from byok.disk_encryption_set_models import (
    DesKeyRotationRequest,
    DiskEncryptionSetInfo,
    DiskEncryptionSetRequest,
    check_existing_des,
    des_body,
    des_id,
    des_info,
)
from byok.key_store import (
    READER,
    KeyInfo,
    KeyStore,
)
from byok.keyvault_ids import KeyId
from byok.outcomes import Change, changes
from byok.retrying import retry_while, write_or_find
from byok.validation import InvalidRequest, check_name, check_rsa_key_size, region_key, same_region
from clients.azure import AzureClients
from clients.disk_encryption_sets import (
    await_des_key,
    des_state,
    patch_des,
    patch_des_key,
    read_des,
    read_settled_des,
)
from clients.key_store_access import (
    holds_role,
    holds_service_key_use,
)
from tasks.key_vault import plan_key, plan_key_vault, plan_new_key_version, plan_rotation_policy
from tasks.outcomes import planned, report
from tasks.retry import STEP_RETRIES
from tasks.subscription import plan_resource_group


@task(name="Create disk encryption set", **STEP_RETRIES)
def ensure_disk_encryption_set(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    location: str,
    vault: KeyStore,
    key: KeyInfo,
    encryption_type: str,
    auto_rotation: bool,
    *,
    identity_id: str | None = None,
    federated_client_id: str | None = None,
    access_timeout_seconds: float = 0,
) -> DiskEncryptionSetInfo:
    """Create the set with the versioned key URL and a system-assigned identity (or the
    user-assigned `identity_id`, with `federated_client_id` for a key in another tenant: Azure
    checks that chain's key access at creation, refusals retried while a grant propagates, up
    to `access_timeout_seconds`). An existing
    set is adopted as it is, with the key and rotation setting wanted returned: they are
    applied by `apply_des_key` once its identity has key access (Azure checks that access on
    every change, so a set whose creation ended Failed, in this run or an earlier one, is
    repaired in that order: grant, then re-submit). Returns the set as it will be."""
    clients = AzureClients.of(credentials, subscription_id)
    sets = clients.compute().disk_encryption_sets
    wanted = {"key_url": key.id, "rotation_to_latest_key_version": auto_rotation}
    target = des_id(clients.subscription_id, resource_group, name)
    doing = "disk encryption set creation"

    def written(exc: Exception) -> bool:
        """Any failure of the create: look the set up. A failed creation is named."""
        if is_failed_operation(exc):
            get_run_logger().warning("%s", as_byok_error(exc, target, doing))
        return is_azure_error(exc)

    with named_failure(target, doing):
        existing = read_settled_des(clients, resource_group, name)
        made = existing is None
        body = des_body(
            location,
            vault,
            key,
            encryption_type,
            auto_rotation,
            identity_id=identity_id,
            federated_client_id=federated_client_id,
        )
        des = (
            existing
            if existing is not None
            else write_or_find(
                lambda: retry_while(
                    lambda: sets.begin_create_or_update(resource_group, name, body).result(),
                    is_propagation_delay,
                    timeout_seconds=access_timeout_seconds,
                    first_delay=2,
                ),
                lambda: read_settled_des(clients, resource_group, name),
                written,
            )
        )
    check_existing_des(des, encryption_type)
    info = des_info(des)
    if des_state(des) == "Failed":
        get_run_logger().warning(
            "Disk encryption set %s: its creation ended Failed; granting its identity key "
            "access, then re-submitting it",
            name,
        )
    if made or (info.key_url, info.rotation_to_latest_key_version) != (key.id, auto_rotation):
        report(info.id, "create" if made else "adopt", note="its key applied once it has access")
    else:
        report(info.id, None)
    return info.model_copy(update=wanted)


@task(name="Wait until the grant is effective", **STEP_RETRIES)
def wait_for_key_access(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    des: DiskEncryptionSetInfo,
    timeout_seconds: float,
) -> DiskEncryptionSetInfo:
    """Apply the set's key and rotation setting (re-submitting a set left Failed) until
    Azure accepts them: it checks the set's key access whenever its key is applied, and
    answers KeyVaultAccessForbidden while the grant propagates."""
    clients = AzureClients.of(credentials, subscription_id)
    wanted = _applied_fields(des.key_url, des.rotation_to_latest_key_version)
    current = read_settled_des(clients, resource_group, des.name)
    diff = changes(_des_fields(current), wanted) if current is not None else []
    properties = DiskEncryptionSetUpdateProperties(
        active_key=KeyForDiskEncryptionSet(key_url=des.key_url),
        rotation_to_latest_key_version_enabled=des.rotation_to_latest_key_version,
    )
    with named_failure(des.id, "applying the key", waited=True):
        applied = retry_while(
            lambda: patch_des(clients, resource_group, des.name, properties),
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=2,
            on_retry=lambda exc, wait: get_run_logger().info(
                "Key access of %s not effective yet; retrying in %.1f s", des.name, wait
            ),
        )
    # the same key re-applied changes nothing: it is how Azure confirms the key access
    report(des.id, "update" if diff else "verify", changes=diff, note="key access effective")
    return des_info(applied)


def _applied_fields(key_url: str, auto_rotation: bool) -> dict[str, object]:
    return {"activeKey": key_url, "rotationToLatestKeyVersionEnabled": auto_rotation}


def _des_fields(des: DiskEncryptionSet) -> dict[str, object]:
    """The set's fields a step applies, by their ARM names."""
    props = des.properties
    return _applied_fields(
        str(props.active_key.key_url), bool(props.rotation_to_latest_key_version_enabled)
    )


@task(name="Read the disk encryption set", **STEP_RETRIES)
def require_des(
    credentials: AzureCredentials, subscription_id: str | None, resource_group: str, name: str
) -> DiskEncryptionSetInfo:
    """The set, which must exist (InvalidRequest naming `des_name` otherwise)."""
    found = read_des(AzureClients.of(credentials, subscription_id), resource_group, name)
    if found is None:
        raise InvalidRequest(
            "des_name",
            name,
            f"no disk encryption set of that name in resource group {resource_group}",
        )
    return des_info(found)


@task(name="Update the disk encryption set key", **STEP_RETRIES)
def update_des_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    key_url: str,
    *,
    in_use: str | None = None,
) -> None:
    """Point the set at a new key version (Azure re-wraps the disks' keys); nothing when it
    points there already. `in_use`: the key the caller just read on the set (else read)."""
    clients = AzureClients.of(credentials, subscription_id)
    target = des_id(clients.subscription_id, resource_group, name)
    if in_use is None:
        current = read_settled_des(clients, resource_group, name)
        in_use = str(current.properties.active_key.key_url) if current is not None else None
    if in_use == key_url:
        report(target, None, note=f"activeKey {key_url}")
        return
    patch_des_key(clients, resource_group, name, key_url)
    report(target, "update", changes=[Change(field="activeKey", old=in_use, new=key_url)])


@task(name="Verify the disk encryption set key", **STEP_RETRIES)
def verify_des_key(
    credentials: AzureCredentials,
    subscription_id: str | None,
    resource_group: str,
    name: str,
    key_url: str,
    timeout_seconds: float,
    poll_seconds: float,
) -> DiskEncryptionSetInfo:
    """Wait until the set reports `key_url` active with re-wrapping done (empty previousKeys)
    and no automatic-rotation error."""
    clients = AzureClients.of(credentials, subscription_id)
    verified = des_info(
        await_des_key(clients, resource_group, name, key_url, timeout_seconds, poll_seconds)
    )
    report(verified.id, "verify", note=f"activeKey {key_url}, previousKeys empty")
    return verified


@task(name="Validate request")
def validate_request(credentials: AzureCredentials, request: DiskEncryptionSetRequest) -> str:
    """Check names and an existing set (read-only), so that a bad request fails before
    anything is written (the vault and key: `check_key_vault`). Returns the set's id."""
    check_name("resource_group", "resource_group", request.resource_group)
    if request.key_store == "key-vault":
        check_name("key_vault", "vault_name", request.vault)
    check_name("key", "key_name", request.key_name)
    check_name("disk_encryption_set", "des_name", request.des_name)
    check_rsa_key_size("key_size", request.key_size)
    clients = AzureClients.of(credentials, request.subscription_id)
    des = read_des(clients, request.resource_group, request.des_name)
    if des is not None:
        same_region(
            "location", request.location, str(des.location), f"disk encryption set '{des.name}'"
        )
        check_existing_des(des, request.encryption_type)
    return des_id(clients.subscription_id, request.resource_group, request.des_name)


@task(name="Check the disk encryption sets", **STEP_RETRIES)
def check_disk_encryption_sets(
    credentials: AzureCredentials, subscription: str, sets: dict[str, tuple[str, str]]
) -> None:
    """Each set (request field → set id and the region it must be in) is in `subscription`
    and its region, and its key is in its vault (a key this tool may not read is left to
    Azure to check)."""
    clients = AzureClients.of(credentials, subscription)
    for field, (set_id, region) in sets.items():
        where = parse_resource_id(set_id) if is_valid_resource_id(set_id) else {}
        if str(where.get("type", "")).lower() != "diskencryptionsets" or "child_type_1" in where:
            raise InvalidRequest(field, set_id, "not a disk encryption set id")
        if str(where["subscription"]).lower() != subscription.lower():
            raise InvalidRequest(
                field,
                set_id,
                f"the disk encryption set must be in the image's subscription {subscription}",
            )
        des = read_des(clients, str(where["resource_group"]), str(where["name"]))
        if des is None:
            raise InvalidRequest(field, set_id, "no such disk encryption set")
        if region_key(str(des.location)) != region_key(region):
            raise InvalidRequest(
                field, set_id, f"the disk encryption set is in {des.location}, not in {region}"
            )
        key = KeyId.parse(str(des.properties.active_key.key_url))
        try:
            clients.keys(key.vault_url).get_key(key.name, key.version)
        except ResourceNotFoundError:
            raise InvalidRequest(
                field, set_id, f"its key {key.versioned} is not in the vault"
            ) from None
        except HttpResponseError as exc:
            if exc.status_code != 403:
                raise
            get_run_logger().info("No read access to %s: its key is checked by Azure", key.name)


@task(name="Plan the disk encryption set", **STEP_RETRIES)
def plan_disk_encryption_set(
    credentials: AzureCredentials, request: DiskEncryptionSetRequest, store: KeyStore | None
) -> None:
    """What each step of prepare-disk-encryption-set would do, from reads only (`store`: the
    adopted managed HSM; else the vault is read here)."""
    clients = AzureClients.of(credentials, request.subscription_id)
    sub, rg = clients.subscription_id, request.resource_group
    plan_resource_group.fn(credentials, sub, rg)
    store = store or plan_key_vault.fn(credentials, sub, rg, request.vault)
    key = plan_key.fn(credentials, sub, store, request.key_name)
    key_name = key.versionless if key else f"{request.vault}/keys/{request.key_name}"
    if request.rotation_policy is not None:
        policy = request.rotation_policy
        plan_rotation_policy.fn(credentials, sub, key, key_name, policy)
    target = des_id(sub, rg, request.des_name)
    des = read_des(clients, rg, request.des_name)
    planned("Create disk encryption set", target, None if des else "create")
    if des is not None:
        key_url = key.versioned if key else f"{key_name}/(new version)"
        diff = changes(_des_fields(des), _applied_fields(key_url, request.auto_key_rotation))
        report(
            target,
            "update" if diff else "verify",
            step="Wait until the grant is effective",
            changes=diff,
            planned=True,
        )
    principal = des_info(des).principal_id if des else None
    held = holds_service_key_use(clients, store, principal, request.key_name)
    who = principal or "the set's new identity"
    step = "Grant the set's identity access to the key"
    planned(step, store.id if store else key_name, None if held else "grant", f"key use by {who}")
    if store is not None and request.reader_on(store):
        read = principal is not None and holds_role(clients, store.id, principal, READER)
        planned(step, store.id, None if read else "grant", f"Reader for {who}")


@task(name="Plan the key rotation", **STEP_RETRIES)
def plan_des_key_rotation(
    credentials: AzureCredentials, request: DesKeyRotationRequest, des: DiskEncryptionSetInfo
) -> None:
    """What each step of rotate-disk-encryption-set-key would do, from reads only."""
    sub = request.subscription_id
    new = plan_new_key_version.fn(credentials, sub, des.key_url, request.rotation_id or "")
    if not des.rotation_to_latest_key_version:
        moved = [Change(field="activeKey", old=des.key_url, new=new)] if new != des.key_url else []
        report(
            des.id,
            "update" if moved else None,
            step="Update the disk encryption set key",
            changes=moved,
            planned=True,
        )
    report(des.id, "verify", step="Verify the disk encryption set key", planned=True)
