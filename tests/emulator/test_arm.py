"""ARM through the real SDK clients: long-running operations in the three polling styles,
failures, throttling, resets, paging and errors."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.mgmt.compute.models import (
    DiskEncryptionSet,
    EncryptionSetIdentity,
    KeyForDiskEncryptionSet,
)

from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from tests.conftest import emulator_credentials
from tests.helpers import arm_request, vault_parameters, vault_with_key


def des_body(key_url: str) -> DiskEncryptionSet:
    return DiskEncryptionSet(
        location="westeurope",
        identity=EncryptionSetIdentity(type="SystemAssigned"),
        properties={"activeKey": KeyForDiskEncryptionSet(key_url=key_url)},
    )


@pytest.fixture
def group(azure: AzureClients) -> str:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    return "rg"


@pytest.fixture
def key_url(azure: AzureClients, emulator: Emulator, group: str) -> str:
    return vault_with_key(azure, emulator, group)[1]


def test_azure_async_operation_style(
    azure: AzureClients, emulator: Emulator, group: str, key_url: str
) -> None:
    emulator.faults.add(Fault("lro-slow", method="PUT", path="diskEncryptionSets", polls=3))
    des = (
        azure.compute()
        .disk_encryption_sets.begin_create_or_update(group, "des1", des_body(key_url))
        .result()
    )
    assert des.properties.provisioning_state == "Succeeded"
    assert des.identity.principal_id in emulator.state.entra.principals
    polls = emulator.requests.find("GET", r"/operationStatuses/")
    assert len(polls) == 3
    put = emulator.requests.find("PUT", r"/diskEncryptionSets/des1$")
    assert put[0].status == 202


def test_location_style_delete(azure: AzureClients, emulator: Emulator, group: str) -> None:
    emulator.faults.add(Fault("lro-slow", method="DELETE", path="resourceGroups/rg$", polls=2))
    azure.resources().resource_groups.begin_delete(group).result()
    assert len(emulator.requests.find("GET", r"/operationResults/")) == 2
    assert not azure.resources().resource_groups.check_existence(group)


def test_resource_group_delete_removes_its_resources(
    azure: AzureClients, emulator: Emulator, group: str
) -> None:
    azure.msi().user_assigned_identities.create_or_update(group, "id1", {"location": "westeurope"})
    azure.resources().resource_groups.begin_delete(group).result()
    azure.resources().resource_groups.create_or_update(group, {"location": "westeurope"})
    with pytest.raises(ResourceNotFoundError):
        azure.msi().user_assigned_identities.get(group, "id1")


def test_provisioning_state_style(azure: AzureClients, emulator: Emulator, group: str) -> None:
    emulator.faults.add(Fault("lro-slow", method="PUT", path="vaults/", polls=3))
    vault = (
        azure.keyvault_management()
        .vaults.begin_create_or_update(group, "kv-style", vault_parameters(emulator))
        .result()
    )
    assert vault.properties.provisioning_state == "Succeeded"
    put = emulator.requests.find("PUT", r"/vaults/kv-style$")
    assert put[0].status == 201
    assert len(emulator.requests.find("GET", r"/vaults/kv-style$")) == 3


def test_failed_operation_raises(
    azure: AzureClients, emulator: Emulator, group: str, key_url: str
) -> None:
    emulator.faults.add(
        Fault(
            "lro-failed",
            method="PUT",
            path="diskEncryptionSets",
            code="KeyVaultAccessForbidden",
            message="no access to the key",
        )
    )
    poller = azure.compute().disk_encryption_sets.begin_create_or_update(
        group, "des1", des_body(key_url)
    )
    with pytest.raises(HttpResponseError) as info:
        poller.result()
    assert "KeyVaultAccessForbidden" in str(info.value)
    des = azure.compute().disk_encryption_sets.get(group, "des1")
    assert des.properties.provisioning_state == "Failed"


def test_failed_location_operation_raises(
    azure: AzureClients, emulator: Emulator, group: str
) -> None:
    emulator.faults.add(Fault("lro-failed", method="DELETE", path="resourceGroups/rg$"))
    with pytest.raises(HttpResponseError):
        azure.resources().resource_groups.begin_delete(group).result()


def test_throttling_honours_retry_after(
    azure: AzureClients, emulator: Emulator, group: str
) -> None:
    emulator.faults.add(
        Fault("status", method="GET", path="resourceGroups/rg$", status=429, retry_after=1, count=2)
    )
    started = time.monotonic()
    assert azure.resources().resource_groups.get(group).name == group
    assert time.monotonic() - started >= 2.0  # two waits of Retry-After: 1
    statuses = [r.status for r in emulator.requests.find("GET", r"resourceGroups/rg$")]
    assert statuses == [429, 429, 200]


def test_post_with_503_and_retry_after_is_retried(azure: AzureClients, emulator: Emulator) -> None:
    emulator.arm.configure_feature("Microsoft.Compute", "Retried")
    emulator.faults.add(
        Fault("status", method="POST", path="features/Retried/register", status=503, retry_after=0)
    )
    feature = azure.features().features.register("Microsoft.Compute", "Retried")
    assert feature.properties.state == "Registering"


def test_connection_reset_is_retried(azure: AzureClients, emulator: Emulator, group: str) -> None:
    emulator.faults.add(Fault("reset", method="GET", path="resourceGroups/rg$"))
    assert azure.resources().resource_groups.get(group).name == group
    assert [r.status for r in emulator.requests.find("GET", "resourceGroups/rg$")] == [0, 200]


def test_lost_answers_happen_after_the_write(emulator: Emulator) -> None:
    once = AzureClients(emulator_credentials(emulator, retry_total=0)).resources()
    emulator.faults.add(Fault("reset-after", method="PUT", path="resourceGroups/lost1$"))
    emulator.faults.add(
        Fault("status-after", method="PUT", path="resourceGroups/lost2$", status=504)
    )
    with pytest.raises(ServiceResponseError):
        once.resource_groups.create_or_update("lost1", {"location": "westeurope"})
    with pytest.raises(HttpResponseError) as info:
        once.resource_groups.create_or_update("lost2", {"location": "westeurope"})
    assert info.value.status_code == 504
    # Neither answer arrived, yet both groups were made.
    assert {g.name for g in once.resource_groups.list()} >= {"lost1", "lost2"}


def test_paging_follows_next_link(azure: AzureClients, emulator: Emulator) -> None:
    emulator.arm.page_size = 2
    for i in range(5):
        azure.resources().resource_groups.create_or_update(f"rg{i}", {"location": "westeurope"})
    names = [g.name for g in azure.resources().resource_groups.list()]
    assert names == [f"rg{i}" for i in range(5)]
    assert len(emulator.requests.find("GET", r"/resourceGroups$")) == 3


def test_user_assigned_identity_gets_server_generated_ids(
    azure: AzureClients, emulator: Emulator, group: str
) -> None:
    identity = azure.msi().user_assigned_identities.create_or_update(
        group, "id1", {"location": "westeurope"}
    )
    assert identity.principal_id in emulator.state.entra.principals
    again = azure.msi().user_assigned_identities.create_or_update(
        group, "id1", {"location": "westeurope", "tags": {"a": "b"}}
    )
    assert (again.principal_id, again.client_id) == (identity.principal_id, identity.client_id)


def test_missing_resource_group_is_refused(azure: AzureClients) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        azure.msi().user_assigned_identities.create_or_update(
            "nope", "id1", {"location": "westeurope"}
        )
    assert "ResourceGroupNotFound" in str(info.value)


def test_unregistered_provider_is_refused(
    azure: AzureClients, emulator: Emulator, group: str
) -> None:
    emulator.arm.configure_provider("Microsoft.ManagedIdentity", "NotRegistered")
    response = arm_request(
        emulator,
        azure,
        "PUT",
        f"/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
        {"location": "westeurope"},
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "MissingSubscriptionRegistration"


def test_unknown_type_and_missing_api_version_are_arm_errors(
    azure: AzureClients, emulator: Emulator, group: str
) -> None:
    unknown = arm_request(
        emulator, azure, "GET", f"/resourceGroups/{group}/providers/Microsoft.Foo/bars/x"
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "InvalidResourceType"
    no_version = arm_request(emulator, azure, "GET", f"/resourceGroups/{group}", api_version="")
    assert no_version.status_code == 400
    assert no_version.json()["error"]["code"] == "MissingApiVersionParameter"
