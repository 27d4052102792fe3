"""Revocation drill steps: take a key's access away (disable its versions, or remove the
dependents' identities' grants) recording what was taken on the key itself, restore exactly
that (also after a crashed run), and observe each dependent fail and recover."""

from __future__ import annotations

from datetime import UTC, datetime

from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.mgmt.containerregistry.operations import RegistriesOperations
from azure.mgmt.core.tools import parse_resource_id
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks.azure import AzureCredentials
from byok.acr_models import encryption_identity
from byok.azure_errors import error_code
from byok.drill import (
    GRANTS_TAG,
    REVOKED_TAG,
    Check,
    Method,
    Observation,
    Revocation,
    RevocationDrillResult,
    Target,
    evidence_markdown,
    evidence_table,
    grant_tags,
    tagged_principals,
)
from byok.errors import InvalidRequest, VerificationFailed
from byok.inventory.blast import Dependent
from byok.inventory.models import Kind
from byok.key_store import CRYPTO_SERVICE_ENCRYPTION_USER, SERVICE_KEY_PERMISSIONS, KeyStore
from byok.keyvault_ids import KeyId
from byok.outcomes import Change
from byok.polling import PollTimeout, poll_until
from byok.registry_probe import probe_registry_data
from byok.retrying import retry_while
from clients.azure import AzureClients
from clients.key_store_access import grant, revoke, vault_for_key
from clients.vm_power import power_state
from tasks.artifacts import artifact_key
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES

# What a VM start answers while its disks' key is still unusable (the restore propagating).
KEY_UNUSABLE_CODES = frozenset(
    {"KeyVaultAccessForbidden", "KeyVaultKeyDisabled", "ForbiddenByRbac", "AccessDenied"}
)
STOPPED = frozenset({"PowerState/stopped", "PowerState/deallocated"})


def _now() -> datetime:
    return datetime.now(UTC)


def _where(resource_id: str) -> tuple[str, str, str]:
    """(subscription, resource group, name) of a resource id."""
    rid = parse_resource_id(resource_id)
    return str(rid["subscription"]), str(rid["resource_group"]), str(rid["name"])


def _keys(credentials: AzureCredentials, key_id: str) -> tuple[KeyClient, str]:
    kid = KeyId.parse(key_id)
    return AzureClients.of(credentials).keys(kid.vault_url), kid.name


def _registries(credentials: AzureCredentials, subscription_id: str) -> RegistriesOperations:
    return AzureClients.of(credentials, subscription_id).container_registry().registries


def _vault(credentials: AzureCredentials, key_id: str, subscriptions: list[str]) -> KeyStore:
    """The vault (or managed HSM) of the key, in one of the subscriptions."""
    for sub in subscriptions or [credentials.subscription_id]:
        try:
            return vault_for_key(AzureClients.of(credentials, sub), key_id)
        except InvalidRequest:
            continue
    raise InvalidRequest("key_id", key_id, "no key vault of the subscriptions serves this key")


@task(name="Find the identities that use the key", **STEP_RETRIES)
def identities_using_key(credentials: AzureCredentials, dependents: list[Dependent]) -> list[str]:
    """The principal ids whose key access the dependents rely on: the disk encryption sets'
    identities (the sets themselves, or the sets on a dependent's path) and the registries'
    encryption identities."""
    sets = {d.resource_id for d in dependents if d.kind is Kind.DISK_ENCRYPTION_SET}
    sets |= {p for d in dependents for p in d.path if "/diskencryptionsets/" in p.lower()}
    registries = {d.resource_id for d in dependents if d.kind is Kind.REGISTRY}
    principals: list[str] = []
    for des_id in sorted(sets):
        sub, group, name = _where(des_id)
        des = AzureClients.of(credentials, sub).compute().disk_encryption_sets.get(group, name)
        identity = des.identity
        if identity is None:
            continue
        users = (identity.user_assigned_identities or {}).values()
        found = [identity.principal_id, *(u.principal_id for u in users)]
        principals += [str(p) for p in found if p]
    for registry_id in sorted(registries):
        sub, group, name = _where(registry_id)
        registry = (
            AzureClients.of(credentials, sub).container_registry().registries.get(group, name)
        )
        principals.append(encryption_identity(registry)[1])
    return list(dict.fromkeys(principals))


@task(name="Revoke key access")
def revoke_key_access(
    credentials: AzureCredentials,
    key_id: str,
    method: Method,
    principals: list[str],
    subscriptions: list[str],
) -> Revocation:
    """Disable every enabled version (each tagged in the same write), or record the
    principals on the key's latest version and then remove their grants."""
    keys, name = _keys(credentials, key_id)
    at = _now()
    revocation = Revocation(method=method, at=at)
    if method is Method.DISABLE_KEY:
        for props in keys.list_properties_of_key_versions(name):
            if not props.enabled:
                continue
            tags = {**(props.tags or {}), REVOKED_TAG: at.isoformat()}
            keys.update_key_properties(name, props.version, enabled=False, tags=tags)
            revocation.versions.append(str(props.version))
            report(str(props.id), "revoke", note="disabled")
    else:
        latest = keys.get_key(name).properties
        tags = {**(latest.tags or {}), **grant_tags(principals)}
        keys.update_key_properties(name, latest.version, tags=tags)
        report(str(latest.id), "update", note=_RECORD)
        vault = _vault(credentials, key_id, subscriptions)
        clients = AzureClients.of(credentials, _where(vault.id)[0])
        for principal in principals:
            revoke(
                clients,
                vault,
                principal,
                SERVICE_KEY_PERMISSIONS,
                CRYPTO_SERVICE_ENCRYPTION_USER,
                name,
            )
            report(vault.id, "revoke", note=f"key use by {principal}")
        revocation.principals = principals
    if not revocation.versions and not revocation.principals:
        report(key_id, None, note="nothing to revoke")
    return revocation


@task(name="Restore key access", **STEP_RETRIES)
def restore_key_access(
    credentials: AzureCredentials, key_id: str, subscriptions: list[str], timeout_seconds: float
) -> Revocation | None:
    """Undo what a drill recorded on the key (this run's, or a crashed run's): enable the
    versions it disabled, give back the grants it removed, then drop the records. None when
    nothing was recorded."""
    keys, name = _keys(credentials, key_id)
    versions, principals, grant_versions = _recorded(keys, name)
    if not versions and not grant_versions:
        report(key_id, None, note="nothing recorded revoked")
        return None
    for version, tags in versions:
        tags.pop(REVOKED_TAG)
        keys.update_key_properties(name, version, enabled=True, tags=tags)
        report(f"{key_id}/{version}", "update", changes=[_ENABLED])
    if principals:
        vault = _vault(credentials, key_id, subscriptions)
        clients = AzureClients.of(credentials, _where(vault.id)[0])
        for principal in dict.fromkeys(principals):
            grant(
                clients,
                vault,
                principal,
                SERVICE_KEY_PERMISSIONS,
                CRYPTO_SERVICE_ENCRYPTION_USER,
                timeout_seconds,
                name,
            )
            report(vault.id, "grant", note=f"key use by {principal}")
        for version, tags in grant_versions:
            kept = {k: v for k, v in tags.items() if not k.startswith(GRANTS_TAG)}
            keys.update_key_properties(name, version, tags=kept)
    restored = Revocation(
        method=Method.REMOVE_GRANT if principals else Method.DISABLE_KEY,
        versions=[v for v, _ in versions],
        principals=list(dict.fromkeys(principals)),
        at=_now(),
    )
    return restored


_RECORD = "the grants it removes recorded in its tags"
_ENABLED = Change(field="enabled", old=False, new=True)

Tagged = list[tuple[str, dict[str, str]]]


def _recorded(keys: KeyClient, name: str) -> tuple[Tagged, list[str], Tagged]:
    """What a drill recorded on the key: the versions it disabled (with their tags), the
    principals whose grants it removed, and the versions holding those records."""
    versions: Tagged = []
    principals: list[str] = []
    grant_versions: Tagged = []
    for props in keys.list_properties_of_key_versions(name):
        tags = dict(props.tags or {})
        if REVOKED_TAG in tags:
            versions.append((str(props.version), tags))
        if tagged_principals(tags):
            principals += tagged_principals(tags)
            grant_versions.append((str(props.version), tags))
    return versions, principals, grant_versions


def _power_state(credentials: AzureCredentials, vm_id: str) -> tuple[str, str]:
    sub, group, name = _where(vm_id)
    return power_state(AzureClients.of(credentials, sub), group, name)


@task(name="Check the dependent before revoking", **STEP_RETRIES)
def observe_before(credentials: AzureCredentials, target: Target) -> Observation | None:
    """The dependent's state before the drill: a VM's power state (a registry's data
    operation is a write: not probed before; None for what reports nothing)."""
    if target.check is Check.POWER_STATE:
        return Observation(at=_now(), state=_power_state(credentials, target.resource_id)[0])
    if target.check is Check.DATA_OPERATION:
        return Observation(at=_now(), state="not checked")
    return None


@task(name="Prove the dependent fails", **STEP_RETRIES)
def observe_failure(
    credentials: AzureCredentials, target: Target, timeout_seconds: float
) -> Observation | None:
    """What the dependent reports once the key is unusable (None: no failure within the
    timeout): a VM stopped, a registry refusing a data operation."""
    interval = credentials.polling_interval_seconds
    try:
        if target.check is Check.POWER_STATE:
            poll_until(
                lambda: _power_state(credentials, target.resource_id)[0],
                STOPPED,
                timeout_seconds=timeout_seconds,
                interval_seconds=interval,
                what=f"VM {target.resource_id}",
            )
            code, message = _power_state(credentials, target.resource_id)
            state = f"{code} ({message})" if message else code
        elif target.check is Check.DATA_OPERATION:
            sub, rid = _where(target.resource_id)[0], target.resource_id
            state = retry_while(
                lambda: probe_registry_data(_registries(credentials, sub), rid, False, 0),
                lambda exc: isinstance(exc, VerificationFailed),
                timeout_seconds=timeout_seconds,
                first_delay=interval,
            )
        else:
            return None
    except (PollTimeout, VerificationFailed) as exc:
        get_run_logger().error("%s did not fail: %s", target.resource_id, exc)
        report(target.resource_id, None, note="did not fail")
        return None
    report(target.resource_id, "verify", note=f"failed: {state}")
    return Observation(at=_now(), state=state)


@task(name="Prove the dependent recovers", **STEP_RETRIES)
def observe_recovery(
    credentials: AzureCredentials, target: Target, timeout_seconds: float
) -> Observation | None:
    """The dependent working again after the restore (None: not within the timeout): a VM
    started (Azure does not restart it by itself) and running, a registry accepting a data
    operation."""
    sub, group, name = _where(target.resource_id)
    clients = AzureClients.of(credentials, sub)
    try:
        if target.check is Check.POWER_STATE:
            stopped = _power_state(credentials, target.resource_id)[0] != "PowerState/running"
            if stopped:
                retry_while(
                    lambda: clients.compute().virtual_machines.begin_start(group, name).result(),
                    lambda exc: (
                        isinstance(exc, HttpResponseError) and error_code(exc) in KEY_UNUSABLE_CODES
                    ),
                    timeout_seconds=timeout_seconds,
                    first_delay=credentials.polling_interval_seconds,
                )
            code, _ = _power_state(credentials, target.resource_id)
            report(target.resource_id, "start" if stopped else "verify", note=code)
            return Observation(at=_now(), state=code) if code == "PowerState/running" else None
        if target.check is Check.DATA_OPERATION:
            registries = clients.container_registry().registries
            state = probe_registry_data(registries, target.resource_id, True, timeout_seconds)
            report(target.resource_id, "verify", note=f"recovered: {state}")
            return Observation(at=_now(), state=state)
    except HttpResponseError as exc:
        get_run_logger().error("%s did not recover: %s", target.resource_id, error_code(exc))
    return None


@task(name="Publish the drill's evidence")
def publish_evidence(result: RevocationDrillResult) -> None:
    """The evidence record as a markdown summary and a table, one row per dependent."""
    name = KeyId.parse(result.key_id).name
    create_markdown_artifact(
        key=artifact_key("revocation-drill", name), markdown=evidence_markdown(result)
    )
    create_table_artifact(
        key=artifact_key("revocation-drill", name, "dependents"),
        table=evidence_table(result),
        description=f"Dependents of {result.key_id} through the drill.",
    )


@task(name="Plan the drill", **STEP_RETRIES)
def plan_drill(
    credentials: AzureCredentials,
    key_id: str,
    method: Method,
    principals: list[str],
    proved: list[Target],
    subscriptions: list[str],
) -> None:
    """What each step of revocation-drill would do to the key and the dependents it
    proves (`proved`), from reads only."""
    keys, name = _keys(credentials, key_id)
    versions, recorded, _ = _recorded(keys, name)
    vault = _vault(credentials, key_id, subscriptions).id if recorded or principals else ""

    def restore(step: str, disabled: list[str], removed: list[str]) -> None:
        for version in disabled:
            report(f"{key_id}/{version}", "update", step=step, changes=[_ENABLED], planned=True)
        for principal in dict.fromkeys(removed):
            report(vault, "grant", step=step, note=f"key use by {principal}", planned=True)

    step = "Restore a crashed drill's revocation"
    restore(step, [v for v, _ in versions], recorded)
    if not versions and not recorded:
        report(key_id, None, step=step, note="nothing recorded revoked", planned=True)
    enabled = [
        str(p.version)
        for p in keys.list_properties_of_key_versions(name)
        if p.enabled or str(p.version) in {v for v, _ in versions}
    ]
    step = "Revoke key access"
    if method is Method.DISABLE_KEY:
        for version in enabled:
            report(f"{key_id}/{version}", "revoke", step=step, note="disabled", planned=True)
    if principals:
        report(key_id, "update", step=step, note=_RECORD, planned=True)
    for principal in principals:
        report(vault, "revoke", step=step, note=f"key use by {principal}", planned=True)
    for target in proved:
        report(target.resource_id, "verify", step="Prove the dependent fails", planned=True)
    restore("Restore key access", enabled if method is Method.DISABLE_KEY else [], principals)
    for target in proved:
        verb = "start" if target.check is Check.POWER_STATE else "verify"
        report(target.resource_id, verb, step="Prove the dependent recovers", planned=True)
