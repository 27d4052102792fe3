"""Every Azure SDK client the flows use, built from an AzureCredentials block: base URL,
credential, TLS trust, polling interval and one retry policy in one place."""

from __future__ import annotations

from functools import cached_property
from os import environ
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit
from urllib.request import getproxies

import requests
from azure.core.credentials import TokenCredential
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from blocks.azure import AzureCredentials
from byok.azure_errors import RetryAfterTooLong
from byok.retrying import IDEMPOTENT_METHODS, resend_allowed
from byok.rotation import KEY_THREADS, THREADS_MAX
from clients.context import shared
from clients.lazy import load
from clients.ratelimit import RateLimitPolicy, new_buckets
from clients.token_once import OneFetchPerScope

if TYPE_CHECKING:  # the clients themselves are loaded on first use (clients.lazy)
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
    from azure.mgmt.resource.subscriptions import SubscriptionClient
    from azure.mgmt.resourcegraph import ResourceGraphClient

ClientT = TypeVar("ClientT")
HTTP_POOL_SIZE = THREADS_MAX + KEY_THREADS
"""Connections kept per host: one for each thread a fleet run can have in a process (its
moves and keys at once); beyond it urllib3 drops connections ("Connection pool is full")."""


class SafeRetryPolicy(RetryPolicy):
    """azure-core's retries without blind re-sends: GET, HEAD, PUT and DELETE are retried as
    azure-core does; POST and PATCH only when the service certainly did not act on them (429,
    503 with Retry-After, no connection made), never after a lost answer (azure-core re-sends
    them on 500/503/504 and on any answer carrying Retry-After). A Retry-After longer than
    `max_retry_after` fails at once (`RetryAfterTooLong`) instead of sleeping through it."""

    def __init__(self, *, max_retry_after: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_retry_after = max_retry_after

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        method = response.http_request.method.upper()
        if method in IDEMPOTENT_METHODS:
            return super().is_retry(settings, response)
        answer = response.http_response
        after = self.get_retry_after(response) is not None
        return bool(settings["total"]) and resend_allowed(method, answer.status_code, after)

    def _is_method_retryable(self, settings: Any, request: Any, response: Any = None) -> bool:
        # Asked by send() on a transport error: decided by increment(), which sees the error.
        return True

    def increment(
        self, settings: dict[str, Any], response: Any = None, error: Exception | None = None
    ) -> bool:
        request = response.http_request if response is not None else None
        if (
            error is not None
            and request is not None
            and request.method.upper() not in IDEMPOTENT_METHODS
            and not self._is_connection_error(error)
        ):
            return False  # sent, answer lost: the caller looks the result up
        return super().increment(settings, response=response, error=error)

    def _sleep_for_retry(self, response: PipelineResponse[Any, Any], transport: Any) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self.max_retry_after:
            path = urlsplit(response.http_request.url).path
            raise RetryAfterTooLong(path, retry_after, self.max_retry_after)
        return super()._sleep_for_retry(response, transport)


PERMISSIONS_API_VERSION = "2022-04-01"  # Microsoft.Authorization permissions


class AzureClients:
    """SDK clients for one credentials block; the token credential is shared by all."""

    def __init__(self, credentials: AzureCredentials, subscription_id: str | None = None) -> None:
        self.block = credentials
        self.subscription_id = subscription_id or credentials.subscription_id
        self.endpoints = credentials.endpoints()
        self._key_clients: dict[str, KeyClient] = {}
        self._arm_clients: dict[tuple[type[Any], bool], Any] = {}

    @classmethod
    def of(cls, credentials: AzureCredentials, subscription_id: str | None = None) -> AzureClients:
        """The process's shared context for this block and subscription (what tasks use)."""
        subscription = subscription_id or credentials.subscription_id
        return shared(credentials, cls, subscription, make=lambda: cls(credentials, subscription))

    @cached_property
    def credential(self) -> TokenCredential:
        """The token credential, one per block in the process (shared by its subscriptions),
        fetching one token per scope at a time."""
        return shared(
            self.block, "credential", make=lambda: OneFetchPerScope(self.block.get_credential())
        )

    def retry_policy(self) -> SafeRetryPolicy:
        """The retry policy of every client (a new one per client: it keeps no state)."""
        return SafeRetryPolicy(
            retry_total=self.block.retry_total, max_retry_after=self.block.max_retry_after_seconds
        )

    @cached_property
    def transport(self) -> RequestsTransport:
        """One HTTP transport per block in the process, shared by every client: its session
        keeps up to HTTP_POOL_SIZE connections per host (urllib3's default of 10 makes a
        fleet run's threads open and drop connections: "Connection pool is full")."""
        return shared(self.block, "transport", make=self._new_transport)

    def _new_transport(self) -> RequestsTransport:
        session = requests.Session()
        # No retries below azure-core's own policy, as azure-core mounts its adapter.
        adapter = HTTPAdapter(
            pool_connections=HTTP_POOL_SIZE,
            pool_maxsize=HTTP_POOL_SIZE,
            max_retries=Retry(total=False, redirect=False, raise_on_status=False),
        )
        for scheme in ("https://", "http://"):
            session.mount(scheme, adapter)
        ca_bundle = self.block.ca_bundle
        if not getproxies():
            # No proxy to honour: the environment is read once, here, instead of by requests
            # on every request (every variable scanned twice for proxies, ~/.netrc looked
            # up, the CA bundle variables read): 0.11 of 0.80 CPU ms per ARM read measured
            # with 39 variables (a Kubernetes pod has one per service). The bundle variables
            # as requests reads them; no ~/.netrc (ARM and Key Vault take bearer tokens).
            session.trust_env = False
            ca_bundle = (
                ca_bundle or environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE")
            )
        verify: dict[str, Any] = {"connection_verify": ca_bundle} if ca_bundle else {}
        return RequestsTransport(session=session, session_owner=False, **verify)

    def _transport_options(self) -> dict[str, Any]:
        return {"retry_policy": self.retry_policy(), "transport": self.transport}

    def arm(self, client_class: type[ClientT], *, tenant_level: bool = False) -> ClientT:
        """Any azure-mgmt client class, pointed at this cloud's Resource Manager, made once per
        context; tenant-level clients (subscriptions, Resource Graph) take no subscription id."""
        key = (client_class, tenant_level)
        if key not in self._arm_clients:
            scope = () if tenant_level else (self.subscription_id,)
            self._arm_clients[key] = client_class(  # type: ignore[call-arg]
                self.credential,
                *scope,
                base_url=self.endpoints.resource_manager,
                credential_scopes=[self.endpoints.arm_scope],
                polling_interval=self.block.polling_interval_seconds,
                per_retry_policies=self._rate_limit(),
                **self._transport_options(),
            )
        return self._arm_clients[key]

    def _rate_limit(self) -> list[RateLimitPolicy]:
        """The pacing policy of ARM clients (after the retry policy: every attempt and every
        poll draws), with the block's buckets, one set per block and process."""
        if not self.block.arm_rate_limit:
            return []
        principal = self.block.client_id or self.block.auth_method
        buckets = shared(self.block, "arm-rate-limit", make=new_buckets)
        return [RateLimitPolicy(principal, buckets)]

    def subscriptions(self) -> SubscriptionClient:
        """Subscriptions, tenants and locations."""
        return self.arm(
            load("azure.mgmt.resource.subscriptions:SubscriptionClient"), tenant_level=True
        )

    def resource_graph(self) -> ResourceGraphClient:
        """Azure Resource Graph queries across subscriptions."""
        return self.arm(load("azure.mgmt.resourcegraph:ResourceGraphClient"), tenant_level=True)

    def resources(self) -> ResourceManagementClient:
        """Resource groups, generic resources and resource providers."""
        return self.arm(load("azure.mgmt.resource.resources:ResourceManagementClient"))

    def deployments(self) -> DeploymentsMgmtClient:
        """ARM template deployments."""
        return self.arm(load("azure.mgmt.resource.deployments:DeploymentsMgmtClient"))

    def features(self) -> FeatureClient:
        """Preview feature registration (Microsoft.Features)."""
        return self.arm(load("azure.mgmt.resource.features:FeatureClient"))

    def keyvault_management(self) -> KeyVaultManagementClient:
        """Vaults and their access policies."""
        return self.arm(load("azure.mgmt.keyvault:KeyVaultManagementClient"))

    def msi(self) -> ManagedServiceIdentityClient:
        """User-assigned managed identities."""
        return self.arm(load("azure.mgmt.msi:ManagedServiceIdentityClient"))

    def authorization(self) -> AuthorizationManagementClient:
        """Role definitions and role assignments."""
        return self.arm(load("azure.mgmt.authorization:AuthorizationManagementClient"))

    def compute(self) -> ComputeManagementClient:
        """Disk encryption sets, galleries, images, VMs."""
        return self.arm(load("azure.mgmt.compute:ComputeManagementClient"))

    def network(self) -> NetworkManagementClient:
        """Virtual networks, subnets and network interfaces."""
        return self.arm(load("azure.mgmt.network:NetworkManagementClient"))

    def container_registry(self) -> ContainerRegistryManagementClient:
        """Container registries."""
        return self.arm(load("azure.mgmt.containerregistry:ContainerRegistryManagementClient"))

    def container_service(self) -> ContainerServiceClient:
        """AKS managed clusters and agent pools."""
        return self.arm(load("azure.mgmt.containerservice:ContainerServiceClient"))

    def permissions(self, scope: str) -> list[dict[str, Any]]:
        """What these credentials may do at `scope` (a subscription, group or resource id):
        ARM's permissions list, one `actions`/`notActions` entry per role held there or
        above. ARM serves it as an extension of any scope (the SDK names only the group and
        resource forms: https://github.com/Azure/azure-sdk-for-net/issues/2521)."""
        request = HttpRequest(
            "GET",
            f"{scope.rstrip('/')}/providers/Microsoft.Authorization/permissions",
            params={"api-version": PERMISSIONS_API_VERSION},
        )
        response = self.resources().send_request(request)
        response.raise_for_status()
        return list(response.json().get("value") or [])

    def keys(self, vault_url: str) -> KeyClient:
        """Key Vault keys of one vault (the data plane), one client per vault: it keeps the
        vault's authentication challenge, so later calls go authenticated at once."""
        origin = vault_url.rstrip("/").lower()
        if origin not in self._key_clients:
            self._key_clients[origin] = KeyClient(
                vault_url,
                self.credential,
                verify_challenge_resource=self.block.verify_keyvault_challenge_resource,
                **self._transport_options(),
            )
        return self._key_clients[origin]

    def crypto(self, key_id: str) -> CryptographyClient:
        """Cryptographic operations with one key (wrap, unwrap…), one client per key id in the
        context."""
        return shared(self.block, "crypto", key_id, make=lambda: self._crypto(key_id))

    def _crypto(self, key_id: str) -> CryptographyClient:
        return CryptographyClient(
            key_id,
            self.credential,
            verify_challenge_resource=self.block.verify_keyvault_challenge_resource,
            **self._transport_options(),
        )
