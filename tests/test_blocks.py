"""The credential blocks: validation, cloud presets, secrets kept secret, registration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blocks import AzureCredentials, IBMCloudCredentials


def test_public_cloud_preset() -> None:
    block = AzureCredentials(tenant_id="t", client_id="c", client_secret="s", subscription_id="sub")
    endpoints = block.endpoints()
    assert endpoints.resource_manager == "https://management.azure.com/"
    assert endpoints.authority_host == "https://login.microsoftonline.com"


@pytest.mark.parametrize(
    ("cloud", "arm"),
    [
        ("AzureUSGovernment", "https://management.usgovcloudapi.net/"),
        ("AzureChinaCloud", "https://management.chinacloudapi.cn/"),
    ],
)
def test_sovereign_presets(cloud: str, arm: str) -> None:
    block = AzureCredentials(
        tenant_id="t", client_id="c", client_secret="s", subscription_id="sub", cloud=cloud
    )  # type: ignore[arg-type]
    assert block.endpoints().resource_manager == arm
    assert block.endpoints().arm_scope == arm + ".default"


def test_custom_cloud_needs_https_urls() -> None:
    with pytest.raises(ValidationError, match="resource_manager_url"):
        AzureCredentials(
            tenant_id="t",
            client_id="c",
            client_secret="s",
            subscription_id="s",
            cloud="Custom",
            resource_manager_url="http://x/",
            authority_host="https://a",
        )


def test_client_secret_method_needs_the_secret() -> None:
    with pytest.raises(ValidationError, match="needs client_secret"):
        AzureCredentials(tenant_id="t", client_id="c", subscription_id="s")


def test_secrets_are_masked() -> None:
    azure = AzureCredentials(
        tenant_id="t", client_id="c", client_secret="hunter2", subscription_id="s"
    )
    ibm = IBMCloudCredentials(api_key="ibm-key-123", account_id="a")
    for block in (azure, ibm):
        assert "hunter2" not in repr(block) and "ibm-key-123" not in repr(block)
        assert "hunter2" not in str(block.model_dump()) and "ibm-key-123" not in str(
            block.model_dump()
        )


def test_block_schemas_render_secrets_as_password_fields() -> None:
    schema = AzureCredentials.model_json_schema()
    assert schema["properties"]["client_secret"]["anyOf"][0]["format"] == "password"
    assert IBMCloudCredentials.model_json_schema()["properties"]["api_key"]["format"] == (
        "password"
    )


def test_blocks_register_and_round_trip(prefect_harness: None) -> None:
    AzureCredentials.register_type_and_schema()
    IBMCloudCredentials.register_type_and_schema()
    AzureCredentials(
        tenant_id="t", client_id="c", client_secret="hunter2", subscription_id="s"
    ).save("round-trip", overwrite=True)
    loaded = AzureCredentials.load_saved("round-trip")
    assert loaded.client_secret is not None
    assert loaded.client_secret.get_secret_value() == "hunter2"


def test_ibm_default_endpoints_follow_the_region() -> None:
    block = IBMCloudCredentials(api_key="k", account_id="a", region="eu-de")
    assert block.key_protect_endpoint() == "https://eu-de.kms.cloud.ibm.com"
    assert "s3.eu-de." in block.cos_s3_endpoint()
