"""Azure cloud endpoint presets (no Prefect import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CloudName = Literal["AzurePublicCloud", "AzureUSGovernment", "AzureChinaCloud", "Custom"]


@dataclass(frozen=True)
class CloudEndpoints:
    """Where a cloud's management plane and token authority are."""

    resource_manager: str
    authority_host: str
    arm_scope: str
    keyvault_suffix: str


PRESETS: dict[str, CloudEndpoints] = {
    "AzurePublicCloud": CloudEndpoints(
        "https://management.azure.com/",
        "https://login.microsoftonline.com",
        "https://management.azure.com/.default",
        "vault.azure.net",
    ),
    "AzureUSGovernment": CloudEndpoints(
        "https://management.usgovcloudapi.net/",
        "https://login.microsoftonline.us",
        "https://management.usgovcloudapi.net/.default",
        "vault.usgovcloudapi.net",
    ),
    "AzureChinaCloud": CloudEndpoints(
        "https://management.chinacloudapi.cn/",
        "https://login.chinacloudapi.cn",
        "https://management.chinacloudapi.cn/.default",
        "vault.azure.cn",
    ),
}
