"""Template deployments: the expression evaluator, dependsOn ordering, and the ACR doc's
template deployed through the real SDK."""

from __future__ import annotations

import json
import time
from importlib.resources import files
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.deployments import DeploymentsMgmtClient
from azure.mgmt.resource.deployments.models import Deployment, DeploymentProperties

from clients.azure import AzureClients
from emulator.faults import Fault
from emulator.server import Emulator
from emulator.services.deployments.expressions import ExpressionContext, TemplateError, evaluate
from emulator.services.deployments.template import order
from tests.helpers import vault_with_key

TEMPLATE = json.loads((files("byok") / "templates" / "acr_cmk.json").read_text())
# The doc's template as published: its registry does not wait for the access policy.
DOC_TEMPLATE = json.loads(json.dumps(TEMPLATE))
DOC_TEMPLATE["resources"][0]["dependsOn"] = DOC_TEMPLATE["resources"][0]["dependsOn"][:1]
SUB = "5f6a9e1c-0000-4000-8000-00000000b10c"


def context(**parameters: Any) -> ExpressionContext:
    return ExpressionContext(
        parameters,
        {"prefix": "[concat(parameters('name'), '-x')]"},
        {"id": f"/subscriptions/{SUB}", "subscriptionId": SUB, "tenantId": "t-1"},
        {"id": f"/subscriptions/{SUB}/resourceGroups/rg", "name": "rg", "location": "westeurope"},
        lambda rid, full: {"clientId": "c-1", "id": rid} if full else {"clientId": "c-1"},
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("[parameters('name')]", "reg"),
        ("[PARAMETERS('Name')]", "reg"),
        ("[concat(parameters('name'), '/add')]", "reg/add"),
        ("[concat('it''s', ' ', 'ok')]", "it's ok"),
        ("[resourceGroup().location]", "westeurope"),
        ("[subscription().tenantId]", "t-1"),
        ("[variables('prefix')]", "reg-x"),
        (
            "[resourceID('Microsoft.ManagedIdentity/userAssignedIdentities', parameters('name'))]",
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/reg",
        ),
        (
            "[resourceId('other', 'Microsoft.KeyVault/vaults/accessPolicies', 'kv', 'add')]",
            f"/subscriptions/{SUB}/resourceGroups/other/providers/"
            "Microsoft.KeyVault/vaults/kv/accessPolicies/add",
        ),
        ("[reference('/x', '2018-11-30').clientId]", "c-1"),
        ("[reference('/x', '2018-11-30', 'Full')['id']]", "/x"),
        ("[[not an expression]", "[not an expression]"),
        ("[parameters('missing')]", TemplateError),
        ("[unknownFunction()]", TemplateError),
        ("[parameters('name']", TemplateError),
    ],
)
def test_expressions(expression: str, expected: Any) -> None:
    if expected is TemplateError:
        with pytest.raises(TemplateError):
            evaluate(expression, context(name="reg"))
    else:
        assert evaluate(expression, context(name="reg")) == expected


def test_object_keys_are_evaluated() -> None:
    assert evaluate({"[parameters('name')]": {}}, context(name="reg")) == {"reg": {}}


def test_order_follows_depends_on() -> None:
    ids = [
        rid.rsplit("/", 1)[1]
        for rid, _, _ in order(
            DOC_TEMPLATE["resources"],
            context(registry_name="acr1", identity_name="id1", vault_name="kv1", kek_id="k"),
        )
    ]
    assert ids == ["id1", "acr1", "add"]  # the doc's registry does not wait for the policy
    cycle = [
        {"type": "A.B/c", "name": "one", "dependsOn": ["two"]},
        {"type": "A.B/c", "name": "two", "dependsOn": ["one"]},
    ]
    with pytest.raises(TemplateError, match="Circular"):
        order(cycle, context())


def deployments(azure: AzureClients) -> Any:
    return azure.arm(DeploymentsMgmtClient).deployments


def deploy(
    azure: AzureClients,
    kid: str,
    template: dict | None = None,
    mode: str = "Incremental",
    **extra: Any,
) -> Any:
    parameters = {
        "registry_name": {"value": "acrtemplate1"},
        "identity_name": {"value": "acr-template-id"},
        "vault_name": {"value": "kv-des"},
        "kek_id": {"value": kid},
        **extra,
    }
    return (
        deployments(azure)
        .begin_create_or_update(
            "rg",
            "acr-cmk",
            Deployment(
                properties=DeploymentProperties(
                    template=template or TEMPLATE, parameters=parameters, mode=mode
                )
            ),
        )
        .result()
    )


def test_the_doc_template_deploys_an_encrypted_registry(
    azure: AzureClients, emulator: Emulator
) -> None:
    _, kid = vault_with_key(azure, emulator)
    result = deploy(azure, kid)
    assert result.properties.provisioning_state == "Succeeded"
    uai = azure.msi().user_assigned_identities.get("rg", "acr-template-id")
    registry = azure.container_registry().registries.get("rg", "acrtemplate1")
    kvp = registry.encryption.key_vault_properties
    assert (kvp.identity, kvp.versioned_key_identifier) == (uai.client_id, kid)
    vault = azure.keyvault_management().vaults.get("rg", "kv-des")
    policy = next(p for p in vault.properties.access_policies if p.object_id == uai.principal_id)
    assert sorted(policy.permissions.keys_property) == ["get", "unwrapKey", "wrapKey"]
    assert [r.id.rsplit("/", 1)[1] for r in result.properties.output_resources] == [
        "acr-template-id",
        "add",
        "acrtemplate1",
    ]
    rerun = deploy(azure, kid, mode="incremental")  # the mode is case-insensitive, as in ARM
    assert rerun.properties.provisioning_state == "Succeeded"
    assert len(emulator.arm.children(registry.id.rsplit("/providers/", 1)[0], registry.type)) == 1


def test_the_doc_template_races_its_access_policy(azure: AzureClients, emulator: Emulator) -> None:
    _, kid = vault_with_key(azure, emulator)
    with pytest.raises(HttpResponseError, match="DeploymentFailed") as caught:
        deploy(azure, kid, DOC_TEMPLATE)
    assert "KeyVaultAccessForbidden" in str(caught.value)
    failed = deployments(azure).get("rg", "acr-cmk")
    assert failed.properties.provisioning_state == "Failed"
    assert [r.id.rsplit("/", 1)[1] for r in failed.properties.output_resources] == [
        "acr-template-id",
        "add",
    ]  # a failed resource stops only what depends on it
    assert deploy(azure, kid, DOC_TEMPLATE).properties.provisioning_state == "Succeeded"


def test_a_grant_still_propagating_fails_the_deployment(
    azure: AzureClients, emulator: Emulator
) -> None:
    _, kid = vault_with_key(azure, emulator)
    emulator.faults.add(Fault("delayed-effect", effect="access-grant", seconds=0.4))
    with pytest.raises(HttpResponseError, match="KeyVaultAccessForbidden"):
        deploy(azure, kid)
    time.sleep(0.4)
    assert deploy(azure, kid).properties.provisioning_state == "Succeeded"


def test_bad_parameters_are_refused_before_anything_is_deployed(
    azure: AzureClients, emulator: Emulator
) -> None:
    _, kid = vault_with_key(azure, emulator)
    with pytest.raises(HttpResponseError, match="'nope' are not valid"):
        deploy(azure, kid, nope={"value": 1})
    template = {**TEMPLATE, "parameters": {**TEMPLATE["parameters"], "extra": {"type": "String"}}}
    with pytest.raises(HttpResponseError, match="'extra' is not provided"):
        deploy(azure, kid, template)
    assert not [r for r in emulator.arm.resources.values() if "registries" in r["id"]]


PREFLIGHT_TEMPLATE = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "resources": [
        {
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "apiVersion": "2023-01-31",
            "name": "id-preflight",
            "location": "westeurope",
        },
        {
            "type": "Microsoft.Network/publicIPAddresses",  # not served by the emulator
            "apiVersion": "2024-05-01",
            "name": "pip-preflight",
            "location": "westeurope",
        },
        {
            "type": "Microsoft.Compute/images",  # refused by Compute: no osDisk
            "apiVersion": "2024-07-01",
            "name": "img-preflight",
            "location": "westeurope",
            "properties": {"storageProfile": {}},
        },
    ],
}


def test_preflight_refuses_the_whole_deployment_before_any_write(
    azure: AzureClients, emulator: Emulator
) -> None:
    azure.resources().resource_groups.create_or_update("rg", {"location": "westeurope"})
    client = deployments(azure)
    props = DeploymentProperties(template=PREFLIGHT_TEMPLATE, mode="Incremental")
    deployment = Deployment(properties=props)
    for attempt in (
        lambda: client.begin_validate("rg", "pre", deployment).result(),
        lambda: client.begin_create_or_update("rg", "pre", deployment).result(),
    ):
        with pytest.raises(HttpResponseError) as caught:
            attempt()
        assert caught.value.response is not None
        error = caught.value.response.json()["error"]
        assert caught.value.status_code == 400
        assert error["code"] == "InvalidTemplateDeployment"
        assert "is not valid according to the validation procedure" in error["message"]
        assert [(d["code"], d["target"].rsplit("/", 1)[1]) for d in error["details"]] == [
            ("InvalidResourceType", "pip-preflight"),
            ("InvalidParameter", "img-preflight"),
        ]
    assert not [r for r in emulator.arm.resources.values() if "pre" in r["name"]]
    valid = {**PREFLIGHT_TEMPLATE, "resources": PREFLIGHT_TEMPLATE["resources"][:1]}
    checked = client.begin_validate(
        "rg", "pre", Deployment(properties=DeploymentProperties(template=valid, mode="Incremental"))
    ).result()
    assert checked.properties.provisioning_state == "Succeeded"
    assert not [r for r in emulator.arm.resources.values() if "id-preflight" in r["id"]]
