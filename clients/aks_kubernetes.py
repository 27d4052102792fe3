"""The core v1 API (Namespaces, Secrets) of a managed cluster, from its user kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import yaml

from clients.lazy import load

if TYPE_CHECKING:  # loaded on first use (clients.lazy)
    from kubernetes import client


def core_api(kubeconfig: bytes) -> client.CoreV1Api:
    """The core v1 API of the kubeconfig's current context."""
    api_client = load("kubernetes.config:new_client_from_config_dict")(yaml.safe_load(kubeconfig))
    return load("kubernetes.client:CoreV1Api")(api_client)


def secrets(api: client.CoreV1Api, page_size: int) -> Iterator[dict[str, Any]]:
    """Every Secret (as JSON), namespace by namespace, page by page."""
    for namespace in api.list_namespace().items:
        token = None
        while True:
            page = api.list_namespaced_secret(
                namespace.metadata.name, limit=page_size, _continue=token
            )
            for item in page.items:
                yield api.api_client.sanitize_for_serialization(item)
            token = page.metadata._continue
            if not token:
                break
