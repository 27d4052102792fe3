"""Microsoft Graph (v1.0) for one credentials block: app registrations, their federated
identity credentials and service principals, as cross-tenant keys need them.

No Microsoft Graph SDK is installed (msgraph-sdk would bring Kiota and its own HTTP stack),
so this is azure-core's pipeline with the block's token credential, retry policy and
transport, like every other client of `clients.azure`. Graph's address is the cloud's
`microsoftGraphResourceId`, read from Resource Manager's cloud metadata
(`GET {resource manager}/metadata/endpoints?api-version=2022-09-01`, what azure-cli reads
for a cloud it does not know: azure-cli core/cloud.py `get_cloud_from_metadata_endpoint`),
so a custom cloud (the emulator) needs no extra setting."""

from __future__ import annotations

from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    NetworkTraceLoggingPolicy,
    RetryPolicy,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest

from byok.azure_errors import is_azure_error
from byok.retrying import write_or_find
from clients.azure import AzureClients
from clients.context import shared

METADATA_API_VERSION = "2022-09-01"


class GraphClient:
    """Graph requests with one block's credential; answers as JSON, errors raised as
    azure-core's HttpResponseError (Graph's errors are OData v4: `error.code`)."""

    def __init__(
        self,
        base_url: str,
        credential: TokenCredential,
        retry_policy: RetryPolicy,
        transport: HttpTransport[Any, Any],
    ) -> None:
        self.base_url = base_url
        self._client: PipelineClient[HttpRequest, Any] = PipelineClient(
            base_url,
            policies=[
                HeadersPolicy({"Accept": "application/json"}),
                retry_policy,
                BearerTokenCredentialPolicy(credential, f"{base_url}/.default"),
                NetworkTraceLoggingPolicy(),
            ],
            transport=transport,
        )

    def send(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """One request to `/v1.0{path}`; the answer's JSON (None when empty)."""
        request = HttpRequest(
            method, f"{self.base_url}/v1.0{path}", json=body, params=params or None
        )
        response = self._client.send_request(request)
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        return response.json() if response.content else None

    def list(self, path: str, filter_: str | None = None) -> list[dict[str, Any]]:
        """Every item of a collection (following `@odata.nextLink`), optionally filtered."""
        page = self.send("GET", path, **({"$filter": filter_} if filter_ else {}))
        items = list(page.get("value") or [])
        while page.get("@odata.nextLink"):
            answer = self._client.send_request(HttpRequest("GET", page["@odata.nextLink"]))
            if answer.status_code >= 400:
                raise HttpResponseError(response=answer)
            page = answer.json()
            items.extend(page.get("value") or [])
        return items


def graph_url(clients: AzureClients) -> str:
    """The cloud's Graph origin, from Resource Manager's cloud metadata (read once per
    block; outside `shared`'s lock, which the clients' own parts take)."""
    known: dict[str, str] = shared(clients.block, "graph-url", make=dict)
    if "url" not in known:
        request = HttpRequest(
            "GET", "/metadata/endpoints", params={"api-version": METADATA_API_VERSION}
        )
        response = clients.resources().send_request(request)
        response.raise_for_status()
        known["url"] = str(response.json()["microsoftGraphResourceId"]).rstrip("/")
    return known["url"]


def graph(clients: AzureClients) -> GraphClient:
    """The block's Graph client, one per block in the process."""
    # every part made before `shared` takes its lock (making them takes it too)
    parts = (graph_url(clients), clients.credential, clients.retry_policy(), clients.transport)
    return shared(clients.block, "graph", make=lambda: GraphClient(*parts))


def odata_text(value: str) -> str:
    """A string literal for a `$filter` (single quotes doubled, as OData escapes them)."""
    return "'" + value.replace("'", "''") + "'"


def service_principal_id(clients: AzureClients, app_id: str) -> str | None:
    """The object id of the app's service principal in the clients' tenant, or None."""
    found = graph(clients).list("/servicePrincipals", f"appId eq {odata_text(app_id)}")
    return str(found[0]["id"]) if found else None


def install_app(clients: AzureClients, app_id: str) -> tuple[str, bool]:
    """The app's service principal in the clients' tenant (`az ad sp create --id <appId>`),
    made once (a lost answer is followed by a lookup, not a second POST): its object id, and
    whether this call made it."""
    existing = service_principal_id(clients, app_id)
    if existing is not None:
        return existing, False

    def found() -> dict[str, Any] | None:
        object_id = service_principal_id(clients, app_id)
        return {"id": object_id} if object_id else None

    made = write_or_find(
        lambda: graph(clients).send("POST", "/servicePrincipals", {"appId": app_id}),
        found,
        is_azure_error,
    )
    return str(made["id"]), True
