"""Every Azure SDK client the flows use, built from an AzureCredentials block: base URL,
credential, TLS trust, polling interval and retry settings in one place."""

from __future__ import annotations

from functools import cached_property
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.deployments import DeploymentsMgmtClient
from azure.mgmt.resource.features import FeatureClient
from azure.mgmt.resource.resources import ResourceManagementClient

from blocks.azure import AzureCredentials

ClientT = TypeVar("ClientT")


class AzureClients:
    """SDK clients for one credentials block; the token credential is shared by all."""

    def __init__(self, credentials: AzureCredentials, subscription_id: str | None = None) -> None:
        self.block = credentials
        self.subscription_id = subscription_id or credentials.subscription_id
        self.endpoints = credentials.endpoints()

    @cached_property
    def credential(self) -> TokenCredential:
        """The shared token credential."""
        return self.block.get_credential()

    def _transport_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"retry_total": self.block.retry_total}
        if self.block.ca_bundle:
            options["connection_verify"] = self.block.ca_bundle
        return options

    def arm(self, client_class: type[ClientT]) -> ClientT:
        """Any azure-mgmt client class, pointed at this cloud's Resource Manager."""
        return client_class(  # type: ignore[call-arg]
            self.credential,
            self.subscription_id,
            base_url=self.endpoints.resource_manager,
            credential_scopes=[self.endpoints.arm_scope],
            polling_interval=self.block.polling_interval_seconds,
            **self._transport_options(),
        )

    def resources(self) -> ResourceManagementClient:
        """Resource groups, generic resources and resource providers."""
        return self.arm(ResourceManagementClient)

    def deployments(self) -> DeploymentsMgmtClient:
        """ARM template deployments."""
        return self.arm(DeploymentsMgmtClient)

    def features(self) -> FeatureClient:
        """Preview feature registration (Microsoft.Features)."""
        return self.arm(FeatureClient)

    def keyvault_management(self) -> KeyVaultManagementClient:
        """Vaults and their access policies."""
        return self.arm(KeyVaultManagementClient)

    def msi(self) -> ManagedServiceIdentityClient:
        """User-assigned managed identities."""
        return self.arm(ManagedServiceIdentityClient)

    def authorization(self) -> AuthorizationManagementClient:
        """Role definitions and role assignments."""
        return self.arm(AuthorizationManagementClient)

    def compute(self) -> ComputeManagementClient:
        """Disk encryption sets, galleries, images, VMs."""
        return self.arm(ComputeManagementClient)

    def network(self) -> NetworkManagementClient:
        """Virtual networks, subnets and network interfaces."""
        return self.arm(NetworkManagementClient)

    def container_registry(self) -> ContainerRegistryManagementClient:
        """Container registries."""
        return self.arm(ContainerRegistryManagementClient)

    def container_service(self) -> ContainerServiceClient:
        """AKS managed clusters and agent pools."""
        return self.arm(ContainerServiceClient)

    def keys(self, vault_url: str) -> KeyClient:
        """Key Vault keys of one vault (the data plane)."""
        return KeyClient(
            vault_url,
            self.credential,
            verify_challenge_resource=self.block.verify_keyvault_challenge_resource,
            **self._transport_options(),
        )

    def crypto(self, key_id: str) -> CryptographyClient:
        """Cryptographic operations with one key (wrap, unwrap…)."""
        return CryptographyClient(
            key_id,
            self.credential,
            verify_challenge_resource=self.block.verify_keyvault_challenge_resource,
            **self._transport_options(),
        )
