"""Retries: the client policy never sends a POST or PATCH twice after a lost answer but
rides through answers that were certainly not served, caps Retry-After; and the one table of
which failures a step retries."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.mgmt.keyvault.models import VaultPatchParameters, VaultPatchProperties
from ibm_botocore.exceptions import ClientError
from ibm_cloud_sdk_core import ApiException
from SoftLayer import SoftLayerAPIError, TransportError

from byok.azure_errors import RetryAfterTooLong, as_byok_error, is_propagation_delay
from byok.errors import InvalidRequest, OperationFailed, PropagationTimedOut, ServiceRefused
from byok.retrying import retry_while
from clients.azure import AzureClients, SafeRetryPolicy
from emulator.faults import Fault
from emulator.server import Emulator
from tasks.retry import is_transient
from tests.conftest import emulator_credentials
from tests.helpers import vault_with_key

CREATE = r"/keys/des-key/create$"


@pytest.fixture
def vault(azure: AzureClients, emulator: Emulator) -> tuple[Any, str]:
    """A vault with one key version; the key client has passed its auth challenge."""
    found, kid = vault_with_key(azure, emulator, vault="kv-retry")
    emulator.requests.clear()
    return found, kid


def key_versions(emulator: Emulator) -> int:
    (data,) = emulator.state.keyvault.vaults.values()
    return len(data.keys["des-key"].versions)


def create_version(azure: AzureClients, vault: Any) -> Any:
    return azure.keys(str(vault.properties.vault_uri)).create_rsa_key("des-key", size=2048)


# -- the client policy, against the emulator -------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault("status-after", method="POST", path=CREATE, status=504), HttpResponseError),
        (Fault("status-after", method="POST", path=CREATE, status=500), HttpResponseError),
        (Fault("reset-after", method="POST", path=CREATE), ServiceResponseError),
        (Fault("status", method="POST", path=CREATE, status=503), HttpResponseError),
    ],
    ids=["504-after-write", "500-after-write", "reset-after-write", "503-no-retry-after"],
)
def test_post_is_not_sent_again_after_a_lost_answer(
    azure: AzureClients, emulator: Emulator, vault: tuple[Any, str], fault: Fault, error: type
) -> None:
    emulator.faults.add(fault)
    with pytest.raises(error):
        create_version(azure, vault[0])
    assert len(emulator.requests.find("POST", CREATE)) == 1
    served = fault.kind != "status"
    assert key_versions(emulator) == 1 + served


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", method="POST", path=CREATE, status=429),
        Fault("status", method="POST", path=CREATE, status=503, retry_after=0.1),
    ],
    ids=["429", "503-retry-after"],
)
def test_post_is_sent_again_when_it_was_not_served(
    azure: AzureClients, emulator: Emulator, vault: tuple[Any, str], fault: Fault
) -> None:
    emulator.faults.add(fault)
    create_version(azure, vault[0])
    assert [r.status for r in emulator.requests.find("POST", CREATE)] == [fault.status, 200]
    assert key_versions(emulator) == 2


def test_patch_is_not_sent_again_after_a_504(
    azure: AzureClients, emulator: Emulator, vault: tuple[Any, str]
) -> None:
    emulator.faults.add(Fault("status-after", method="PATCH", path="/vaults/kv-retry$", status=504))
    patch = VaultPatchParameters(properties=VaultPatchProperties(enabled_for_disk_encryption=True))
    with pytest.raises(HttpResponseError):
        azure.keyvault_management().vaults.update("rg", "kv-retry", patch)
    assert len(emulator.requests.find("PATCH", "/vaults/kv-retry$")) == 1


@pytest.mark.parametrize("kind", ["reset-after", "status-after"])
def test_put_is_sent_again_after_a_lost_answer(
    azure: AzureClients, emulator: Emulator, kind: str
) -> None:
    emulator.faults.add(Fault(kind, method="PUT", path="/resourcegroups/rg-x$", status=504))
    group = azure.resources().resource_groups.create_or_update("rg-x", {"location": "westeurope"})
    assert group.name == "rg-x"
    assert len(emulator.requests.find("PUT", "/resourcegroups/rg-x$")) == 2


def test_connect_errors_are_retried_for_post_but_read_errors_are_not() -> None:
    policy = SafeRetryPolicy(max_retry_after=1)
    sent = PipelineRequest(HttpRequest("POST", "https://vault.example/keys/k/create"), None)  # type: ignore[arg-type]

    def settings() -> dict[str, Any]:
        return policy.configure_retries({})

    assert policy.increment(settings(), response=sent, error=ServiceRequestError("refused"))
    assert not policy.increment(settings(), response=sent, error=ServiceResponseError("reset"))


def test_a_short_retry_after_is_waited(azure: AzureClients, emulator: Emulator) -> None:
    emulator.faults.add(
        Fault("status", method="GET", path="/resourcegroups$", status=429, retry_after=1)
    )
    started = time.monotonic()
    list(azure.resources().resource_groups.list())
    assert time.monotonic() - started >= 1
    assert [r.status for r in emulator.requests.find("GET", "/resourcegroups$")] == [429, 200]


def test_a_too_long_retry_after_fails_at_once(emulator: Emulator) -> None:
    azure = AzureClients(emulator_credentials(emulator, max_retry_after_seconds=60))
    emulator.faults.add(
        Fault("status", method="GET", path="/resourcegroups$", status=429, retry_after=7200)
    )
    started = time.monotonic()
    with pytest.raises(
        RetryAfterTooLong, match=r"resourcegroups: throttled: .* wait 7200 s .* 60 s"
    ):
        list(azure.resources().resource_groups.list())
    assert time.monotonic() - started < 5
    assert not is_transient(RetryAfterTooLong("x", 7200, 60))


# -- the classification table ----------------------------------------------------------------
def azure_error(emulator: Emulator, azure: AzureClients, fault: Fault) -> Exception:
    """The error the SDK raises for a group read answered by `fault` (no client retries)."""
    emulator.faults.add(fault)
    once = AzureClients(emulator_credentials(emulator, retry_total=0))
    try:
        once.resources().resource_groups.get("rg-none")
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def status(code: int, error: str | None = None) -> Fault:
    return Fault("status", method="GET", path="/resourcegroups/rg-none$", status=code, code=error)


AZURE_TABLE = [
    (status(429), True),
    (status(500), True),
    (status(502), True),
    (status(503), True),
    (status(504), True),
    (status(409, "AnotherOperationInProgress"), True),
    (Fault("reset", method="GET", path="/resourcegroups/rg-none$"), True),
    (status(400, "InvalidParameter"), False),
    (status(403, "ForbiddenByFirewall"), False),
    (status(403, "AuthorizationFailed"), False),
    (status(404, "ResourceGroupNotFound"), False),
    (status(409, "Conflict"), False),
]


@pytest.mark.parametrize(
    ("fault", "transient"),
    AZURE_TABLE,
    ids=[f"{f.kind}-{f.status}-{f.code}" for f, _ in AZURE_TABLE],
)
def test_azure_errors_are_classified(
    azure: AzureClients, emulator: Emulator, fault: Fault, transient: bool
) -> None:
    assert is_transient(azure_error(emulator, azure, fault)) is transient


@pytest.mark.parametrize(
    ("code", "transient"),
    [("InternalOperationError", True), ("KeyVaultAccessForbidden", False)],
)
def test_failed_operations_are_retried_only_with_a_retryable_code(
    azure: AzureClients, emulator: Emulator, vault: tuple[Any, str], code: str, transient: bool
) -> None:
    emulator.faults.add(Fault("lro-failed", method="PUT", path="/diskEncryptionSets/", code=code))
    body = {
        "location": "westeurope",
        "identity": {"type": "SystemAssigned"},
        "properties": {"activeKey": {"keyUrl": vault[1]}},
    }
    sets = azure.compute().disk_encryption_sets
    with pytest.raises(HttpResponseError) as failed:
        sets.begin_create_or_update("rg", "des", body).result()
    assert is_transient(failed.value) is transient
    named = as_byok_error(failed.value, "/des", "creation")
    assert isinstance(named, OperationFailed) is (not transient)
    if not transient:
        assert str(named).startswith(f"/des: creation ended Failed: {code}: ")


def test_a_firewall_refusal_is_not_a_propagation_delay(
    azure: AzureClients, emulator: Emulator, vault: tuple[Any, str]
) -> None:
    from azure.mgmt.keyvault.models import NetworkRuleSet

    azure.keyvault_management().vaults.update(
        "rg",
        "kv-retry",
        VaultPatchParameters(
            properties=VaultPatchProperties(
                network_acls=NetworkRuleSet(default_action="Deny", bypass="None")
            )
        ),
    )
    with pytest.raises(HttpResponseError) as refused:
        azure.keys(str(vault[0].properties.vault_uri)).get_key("des-key")
    assert refused.value.status_code == 403
    assert not is_propagation_delay(refused.value) and not is_transient(refused.value)
    named = as_byok_error(refused.value, "kv-retry", "reading the key")
    assert isinstance(named, ServiceRefused)
    assert str(named).startswith("kv-retry: reading the key refused: ForbiddenByFirewall: ")


def s3_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


OTHER_TABLE: list[tuple[BaseException, bool]] = [
    (requests.exceptions.RetryError("Max retries exceeded (too many 503 responses)"), True),
    (requests.ConnectionError("reset"), True),
    (ApiException(429, message="throttled"), True),
    (ApiException(503, message="unavailable"), True),
    (ApiException(403, message="forbidden"), False),
    (ApiException(400, message="bad"), False),
    (SoftLayerAPIError(429, "too many requests"), True),
    (SoftLayerAPIError("SoftLayer_Exception_WebService_RateLimitExceeded", "slow down"), True),
    (TransportError(0, "connection reset"), True),
    (SoftLayerAPIError("SoftLayer_Exception_NotFound", "missing"), False),
    (SoftLayerAPIError(403, "forbidden"), False),
    (s3_error("SlowDown", 503), True),
    (s3_error("InternalError", 500), True),
    (s3_error("AccessDenied", 403), False),
    (InvalidRequest("key_size", 1024, "must be 2048, 3072 or 4096"), False),
    (ServiceRefused("/x", "refused"), False),
    (PropagationTimedOut("/x", "not effective"), False),
    (ValueError("bad"), False),
]


@pytest.mark.parametrize(
    ("exc", "transient"), OTHER_TABLE, ids=[f"{type(e).__name__}-{e}" for e, _ in OTHER_TABLE]
)
def test_ibm_and_own_errors_are_classified(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_every_error_survives_pickling_as_persisted_results_need() -> None:
    import pickle

    from byok.azure_errors import RetryAfterTooLong
    from byok.errors import ConcurrentRun, InvalidRequest, OperationFailed
    from byok.parameters import InvalidParameters

    errors = [
        InvalidRequest("key_size", 1024, "must be 2048, 3072 or 4096"),
        InvalidParameters([InvalidRequest("a", 1, "x"), InvalidRequest("b", 2, "y")]),
        OperationFailed("/subscriptions/s/x", "ended Failed (InternalError)"),
        ConcurrentRun("/subscriptions/s/x"),
        RetryAfterTooLong("/subscriptions/s/x", 7200, 300),
    ]
    for error in errors:
        again = pickle.loads(pickle.dumps(error))
        assert (type(again), str(again)) == (type(error), str(error))


def test_retry_while_stops_after_max_attempts_or_at_a_failure_it_does_not_retry() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def fail() -> None:
        calls.append(1)
        raise ConnectionError("dropped")

    with pytest.raises(ConnectionError):
        retry_while(fail, is_transient, timeout_seconds=3600, max_attempts=4, sleep=waits.append)
    assert len(calls) == 4 and len(waits) == 3 and waits[-1] > waits[0]
    calls.clear()
    with pytest.raises(ConnectionError):
        retry_while(fail, lambda exc: False, timeout_seconds=3600, sleep=waits.append)
    assert len(calls) == 1
