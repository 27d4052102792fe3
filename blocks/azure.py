"""The Azure credentials block: who we are, in which cloud, and how to reach it."""

from __future__ import annotations

from typing import Any, Literal, cast

from azure.core.credentials import TokenCredential
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from blocks.chosen import chosen_block
from blocks.clouds import PRESETS, CloudEndpoints, CloudName

AuthMethod = Literal["client_secret", "certificate", "managed_identity", "default"]


class AzureCredentials(Block):
    """A service principal (client secret or certificate), a managed identity, or the
    DefaultAzureCredential chain; the default subscription; and the cloud's endpoints
    (public Azure, US Government, China, or a custom cloud such as Azure Stack or the
    byok emulator)."""

    _block_type_name = "BYOK Azure Credentials"
    _block_type_slug = "byok-azure-credentials"
    _description = "Credentials and cloud endpoints for the byok-flows Azure procedures."

    auth_method: AuthMethod = Field(
        "client_secret",
        description="client_secret or certificate (a service principal), managed_identity, "
        "or default (DefaultAzureCredential: environment, workload identity, CLI…).",
    )
    tenant_id: str | None = Field(None, description="Entra tenant (directory) id.")
    client_id: str | None = Field(
        None,
        description="Application (client) id; for managed_identity, a user-assigned "
        "identity's client id (empty: the system-assigned identity).",
    )
    client_secret: SecretStr | None = Field(None, description="The client secret.")
    certificate_path: str | None = Field(
        None, description="PEM or PKCS12 file with the certificate and its private key."
    )
    certificate_password: SecretStr | None = Field(
        None, description="Password of the certificate file, if any."
    )
    subscription_id: str = Field(..., description="Default subscription of the procedures.")
    cloud: CloudName = Field(
        "AzurePublicCloud",
        description="Endpoint preset; Custom takes the URLs below (Azure Stack, emulator).",
    )
    resource_manager_url: str | None = Field(
        None, description="ARM base URL (Custom cloud), e.g. https://management.local/."
    )
    authority_host: str | None = Field(
        None, description="Token authority (Custom cloud), an https URL."
    )
    arm_scope: str | None = Field(
        None,
        description="Token scope for ARM; default: the preset's (public Azure's for Custom).",
    )
    verify_keyvault_challenge_resource: bool = Field(
        True,
        description="Require Key Vault hosts to be subdomains of the challenge "
        "resource; turn off for non-public clouds served from other hosts.",
    )
    ca_bundle: str | None = Field(
        None,
        description="Path of a PEM CA bundle to trust (private CA, emulator); empty: "
        "REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE if set, else the public CAs. Proxies: HTTPS_PROXY "
        "and NO_PROXY as requests reads them (a process with no proxy set when it first calls "
        "Azure does not look again).",
    )
    polling_interval_seconds: float = Field(
        30.0,
        ge=0,
        description="Default wait between long-running-operation polls when the "
        "service sends no Retry-After.",
    )
    retry_total: int = Field(10, ge=0, description="Retries of throttled/failed requests.")
    arm_rate_limit: bool = Field(
        True,
        description="Pace Resource Manager requests with client-side token buckets of ARM's "
        "documented sizes (per subscription, principal and read/write/delete), corrected by "
        "its remaining-requests headers and Retry-After; off: rely on retries alone.",
    )
    max_retry_after_seconds: float = Field(
        300,
        ge=0,
        description="Longest Retry-After wait accepted from a throttled service; a longer "
        "one fails the step at once, naming the wait.",
    )

    @model_validator(mode="after")
    def _check(self) -> AzureCredentials:
        if self.auth_method in ("client_secret", "certificate") and not (
            self.tenant_id and self.client_id
        ):
            raise ValueError(f"auth_method {self.auth_method!r} needs tenant_id and client_id")
        if self.auth_method == "client_secret" and self.client_secret is None:
            raise ValueError("auth_method 'client_secret' needs client_secret")
        if self.auth_method == "certificate" and not self.certificate_path:
            raise ValueError("auth_method 'certificate' needs certificate_path")
        if self.cloud == "Custom":
            for name in ("resource_manager_url", "authority_host"):
                value = getattr(self, name)
                if not value or not value.startswith("https://"):
                    raise ValueError(f"cloud 'Custom' needs {name} as an https URL, got {value!r}")
        return self

    @classmethod
    def chosen(cls, given: Any, name: str | None) -> AzureCredentials:
        """The block picked in a flow's `credentials` parameter, else the one the request's
        `azure_credentials_block` names."""
        return chosen_block(cls, given, name, "request.azure_credentials_block")

    @classmethod
    def load_saved(cls, name: str) -> AzureCredentials:
        """Load a saved block by name (synchronously, typed)."""
        return cast(AzureCredentials, cls.load(name))

    def endpoints(self) -> CloudEndpoints:
        """The effective endpoints: the preset, or the custom URLs."""
        if self.cloud != "Custom":
            preset = PRESETS[self.cloud]
            return CloudEndpoints(
                self.resource_manager_url or preset.resource_manager,
                self.authority_host or preset.authority_host,
                self.arm_scope or preset.arm_scope,
                preset.keyvault_suffix,
            )
        public = PRESETS["AzurePublicCloud"]
        return CloudEndpoints(
            str(self.resource_manager_url),
            str(self.authority_host).rstrip("/"),
            self.arm_scope or public.arm_scope,
            public.keyvault_suffix,
        )

    def get_credential(self) -> TokenCredential:
        """A token credential for this identity and cloud."""
        from azure.identity import (
            CertificateCredential,
            ClientSecretCredential,
            DefaultAzureCredential,
            ManagedIdentityCredential,
        )

        endpoints = self.endpoints()
        common = {
            "authority": endpoints.authority_host,
            # MSAL asks login.microsoftonline.com about any other authority otherwise.
            "disable_instance_discovery": self.cloud == "Custom",
        }
        if self.ca_bundle:
            common["connection_verify"] = self.ca_bundle
        if self.auth_method == "client_secret":
            assert self.client_secret is not None
            return ClientSecretCredential(
                str(self.tenant_id),
                str(self.client_id),
                self.client_secret.get_secret_value(),
                **common,
            )
        if self.auth_method == "certificate":
            password = (
                self.certificate_password.get_secret_value()
                if (self.certificate_password)
                else None
            )
            return CertificateCredential(
                str(self.tenant_id),
                str(self.client_id),
                str(self.certificate_path),
                password=password,
                **common,
            )
        if self.auth_method == "managed_identity":
            return ManagedIdentityCredential(client_id=self.client_id)
        return DefaultAzureCredential(authority=endpoints.authority_host)
