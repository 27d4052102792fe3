"""Every IBM Cloud client the flows use, built from an IBMCloudCredentials block: one IAM
authenticator (the block's IAM URL and CA bundle), Key Protect, IAM policies and identity,
the SoftLayer API and COS.

One retry policy for all of them: idempotent requests (GET, HEAD, PUT, DELETE) are re-sent on
throttling, 5xx and dropped connections; a non-idempotent write (POST, PATCH) only when its
answer certainly was not served (429, 503, the connection never made). A write whose answer
was lost is never re-sent blind: the task looks the resource up first (byok.ibm_writes)."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
from ibm_botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from ibm_botocore.retries import quota, standard
from ibm_cloud_sdk_core import ApiException, BaseService
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_cloud_sdk_core.http_adapter import SSLHTTPAdapter
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from blocks.ibm import IBMCloudCredentials
from clients.context import shared
from clients.lazy import load

if TYPE_CHECKING:  # the clients themselves are loaded on first use (clients.lazy)
    import SoftLayer
    from ibm_platform_services import IamIdentityV1, IamPolicyManagementV1
    from ibm_vpc import VpcV1

KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"
_ROTATION = {"policy": "rotation"}
VPC_VERSION = "2025-04-08"  # the VPC API version date the flows are written against
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
UNSERVED_STATUS = frozenset({429, 503})  # the service refused before doing anything
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class WriteSafeRetry(Retry):
    """urllib3's Retry for ibm-cloud-sdk-core and SoftLayer: read errors (a lost answer) are
    retried for idempotent methods only (`allowed_methods`), statuses as the policy says."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() not in IDEMPOTENT:
            return bool(self.total) and status_code in UNSERVED_STATUS
        return super().is_retry(method, status_code, has_retry_after)


def write_safe_retry(total: int, backoff_max: float) -> WriteSafeRetry:
    """The policy as a urllib3 Retry (connection failures before sending are always safe)."""
    return WriteSafeRetry(
        total=total,
        backoff_factor=0.5,
        backoff_max=backoff_max,
        status_forcelist=RETRY_STATUS,
        allowed_methods=IDEMPOTENT,
        raise_on_status=False,
    )


class WriteSafeConditions(standard.StandardRetryConditions):
    """botocore's standard retry conditions with the policy: a POST (CreateMultipartUpload,
    CompleteMultipartUpload) is re-sent only when its answer was certainly not served."""

    def is_retryable(self, context: standard.RetryContext) -> bool:
        if not super().is_retryable(context):
            return False
        if context.operation_model.http.get("method", "GET") in IDEMPOTENT:
            return True
        if context.http_response is not None:
            return context.http_response.status_code in UNSERVED_STATUS
        return isinstance(context.caught_exception, EndpointConnectionError | ConnectTimeoutError)


def _write_safe_s3(client: Any, max_attempts: int) -> Any:
    """Replace an S3 client's retry handler by the policy's (same backoff and quota)."""
    events, name = client.meta.events, client.meta.service_model.service_id.hyphenize()
    events.unregister(f"needs-retry.{name}", unique_id=f"retry-config-{name}")
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=WriteSafeConditions(max_attempts=max_attempts),
            retry_backoff=standard.ExponentialBackoff(),
        ),
        retry_event_adapter=standard.RetryEventAdapter(),
        retry_quota=standard.RetryQuotaChecker(quota.RetryQuota()),
    )
    events.register(f"needs-retry.{name}", handler.needs_retry, unique_id=f"retry-config-{name}")
    return client


class KeyProtectClient(BaseService):
    """The Key Protect REST API (/api/v2) for one instance, through ibm-cloud-sdk-core."""

    DEFAULT_SERVICE_NAME = "key_protect"

    def __init__(self, authenticator: IAMAuthenticator, service_url: str, instance_id: str):
        super().__init__(service_url=service_url, authenticator=authenticator)
        self.instance_id = instance_id

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        headers = {"bluemix-instance": self.instance_id, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = KEY_TYPE if path == "/api/v2/keys" else "application/json"
        request = self.prepare_request(method, path, headers=headers, params=params, data=body)
        try:
            result = self.send(request).get_result()
        except ApiException as exc:
            exc.message = _kms_error(exc) or exc.message
            raise
        # vnd.ibm.kms.*+json bodies come back as the raw response
        return result.json() if isinstance(result, requests.Response) else result

    def create_key(
        self,
        name: str,
        *,
        extractable: bool = False,
        payload: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Create (or import, with a base64 `payload`) a root or standard key."""
        resource: dict[str, Any] = {"type": KEY_TYPE, "name": name, "extractable": extractable}
        if payload is not None:
            resource["payload"] = payload
        if description:
            resource["description"] = description
        body = {
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [resource],
        }
        return self._call("POST", "/api/v2/keys", body)["resources"][0]

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key's metadata."""
        return self._call("GET", "/api/v2/keys").get("resources") or []

    def get_key(self, key_id: str) -> dict[str, Any]:
        """One key (with its payload when it is a standard key)."""
        return self._call("GET", f"/api/v2/keys/{key_id}")["resources"][0]

    def wrap(self, key_id: str, plaintext: str | None = None) -> dict[str, Any]:
        """Wrap a base64 DEK ({ciphertext, keyVersion}); without one Key Protect generates a
        32-byte DEK and returns it as `plaintext` too."""
        body = {} if plaintext is None else {"plaintext": plaintext}
        return self._call("POST", f"/api/v2/keys/{key_id}/actions/wrap", body)

    def unwrap(self, key_id: str, ciphertext: str) -> dict[str, Any]:
        """{plaintext, keyVersion} (+ a fresh `ciphertext` when the key was rotated)."""
        return self._call(
            "POST", f"/api/v2/keys/{key_id}/actions/unwrap", {"ciphertext": ciphertext}
        )

    def rewrap(self, key_id: str, ciphertext: str) -> dict[str, Any]:
        """{ciphertext, keyVersion, rewrappedKeyVersion} under the latest key version."""
        return self._call(
            "POST", f"/api/v2/keys/{key_id}/actions/rewrap", {"ciphertext": ciphertext}
        )

    def registrations(self, key_id: str) -> list[dict[str, Any]]:
        """The cloud resources registered as protected by a key (with their key version)."""
        return self._call("GET", f"/api/v2/keys/{key_id}/registrations").get("resources") or []

    def rotation_policy(self, key_id: str) -> dict[str, Any] | None:
        """The root key's rotation policy ({enabled, interval_month}), or None."""
        found = self._call("GET", f"/api/v2/keys/{key_id}/policies", params=_ROTATION)
        return next((p["rotation"] for p in found.get("resources") or [] if "rotation" in p), None)

    def set_rotation_policy(self, key_id: str, interval_month: int, enabled: bool = True) -> None:
        """Rotate the root key every `interval_month` months (1 to 12)."""
        rotation = {"enabled": enabled, "interval_month": interval_month}
        body = {
            "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
            "resources": [{"type": POLICY_TYPE, "rotation": rotation}],
        }
        self._call("PUT", f"/api/v2/keys/{key_id}/policies", body, _ROTATION)

    def rotate(self, key_id: str, payload: str | None = None) -> None:
        """Rotate a root key (imported keys need the new base64 `payload`)."""
        self._call(
            "POST",
            f"/api/v2/keys/{key_id}/actions/rotate",
            {} if payload is None else {"payload": payload},
        )


def _kms_error(exc: ApiException) -> str | None:
    """The message of a Key Protect error collection (the core SDK does not read it)."""
    try:
        error = exc.http_response.json()["resources"][0]
    except (AttributeError, ValueError, KeyError, IndexError, TypeError):
        return None
    reasons = error.get("reasons") or [{}]
    return f"{error.get('errorMsg', '')} ({reasons[0].get('code', '')})".strip()


class IBMClients:
    """SDK clients for one credentials block; the IAM authenticator is shared by all."""

    max_retries = 4
    max_retry_interval = 30.0

    def __init__(self, credentials: IBMCloudCredentials) -> None:
        self.block = credentials
        self._http_config: dict[str, Any] = (
            {"verify": credentials.ca_bundle} if credentials.ca_bundle else {}
        )

    @classmethod
    def of(cls, credentials: IBMCloudCredentials) -> IBMClients:
        """The process's shared context for this block (what tasks use): one IAM token for
        every task of a run."""
        return shared(credentials, cls, make=lambda: cls(credentials))

    @cached_property
    def authenticator(self) -> IAMAuthenticator:
        """The API key's IAM authenticator (tokens cached and refreshed)."""
        authenticator = IAMAuthenticator(
            self.block.api_key.get_secret_value(), url=self.block.iam_url
        )
        authenticator.token_manager.http_config = dict(self._http_config)
        return authenticator

    def _configure(self, service: BaseService, url: str) -> Any:
        service.set_service_url(url)
        service.set_http_config(dict(self._http_config))
        # not enable_retries(): it re-sends POSTs on read errors and 5xx; the policy instead
        service.retry_config = write_safe_retry(self.max_retries, self.max_retry_interval)
        service.http_adapter = SSLHTTPAdapter(max_retries=service.retry_config)
        service.http_client.mount("https://", service.http_adapter)
        service.http_client.mount("http://", service.http_adapter)
        return service

    def key_protect(self, instance_id: str) -> KeyProtectClient:
        """Key Protect for one instance (its GUID)."""
        url = self.block.key_protect_endpoint()
        return self._configure(KeyProtectClient(self.authenticator, url, instance_id), url)

    def policies(self) -> IamPolicyManagementV1:
        """IAM access and authorization policies."""
        service = load("ibm_platform_services:IamPolicyManagementV1")(self.authenticator)
        return self._configure(service, self.block.iam_url)

    def identity(self) -> IamIdentityV1:
        """IAM service IDs and API keys."""
        service = load("ibm_platform_services:IamIdentityV1")(self.authenticator)
        return self._configure(service, self.block.iam_url)

    def vpc(self) -> VpcV1:
        """The VPC API (generation 2) of the block's region, at API version VPC_VERSION."""
        service = load("ibm_vpc:VpcV1")(version=VPC_VERSION, authenticator=self.authenticator)
        return self._configure(service, self.block.vpc_endpoint())

    def softlayer(self) -> SoftLayer.BaseClient:
        """The SoftLayer (classic) API over REST, user 'apikey' with the block's API key; its
        reads (GET) and writes (POST) retried as the policy says."""
        transport = load("SoftLayer:RestTransport")(
            endpoint_url=self.block.softlayer_url,
            timeout=60,
            verify=self.block.ca_bundle or True,
        )
        retry = write_safe_retry(self.max_retries, self.max_retry_interval)
        transport.client.mount("https://", HTTPAdapter(max_retries=retry))
        transport.client.mount("http://", HTTPAdapter(max_retries=retry))
        auth = load("SoftLayer:BasicHTTPAuthentication")(
            "apikey", self.block.api_key.get_secret_value()
        )
        return load("SoftLayer:BaseClient")(auth=auth, transport=transport)

    def cos(self, service_instance_id: str | None = None) -> Any:
        """An ibm_boto3 S3 client, one per COS instance in the context (it keeps its own IAM
        token): HMAC credentials when the block has them, else IAM (which needs the COS
        `service_instance_id` to create buckets)."""
        return shared(
            self.block, "cos", service_instance_id, make=lambda: self._cos(service_instance_id)
        )

    def _cos(self, service_instance_id: str | None) -> Any:
        options: dict[str, Any] = {
            "endpoint_url": self.block.cos_s3_endpoint(),
            "verify": self.block.ca_bundle or True,
        }
        new_client, config = load("ibm_boto3:client"), load("ibm_botocore.client:Config")
        attempts = self.max_retries + 1
        retries = {"mode": "standard", "max_attempts": attempts}
        secret = self.block.cos_hmac_secret_access_key
        if self.block.cos_hmac_access_key_id and secret:
            client = new_client(
                "s3",
                aws_access_key_id=self.block.cos_hmac_access_key_id,
                aws_secret_access_key=secret.get_secret_value(),
                config=config(retries=retries),
                **options,
            )
        else:
            client = new_client(
                "s3",
                ibm_api_key_id=self.block.api_key.get_secret_value(),
                ibm_service_instance_id=service_instance_id,
                ibm_auth_endpoint=self.block.iam_url.rstrip("/") + "/identity/token",
                config=config(signature_version="oauth", retries=retries),
                **options,
            )
        return _write_safe_s3(client, attempts)
