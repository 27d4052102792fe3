"""The core v1 API (Namespaces, Secrets) of a managed cluster, from its user kubeconfig."""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from clients.lazy import load

if TYPE_CHECKING:  # loaded on first use (clients.lazy)
    from kubernetes import client


def core_api(kubeconfig: bytes) -> client.CoreV1Api:
    """The core v1 API of the kubeconfig's current context."""
    api_client = load("kubernetes.config:new_client_from_config_dict")(yaml.safe_load(kubeconfig))
    return load("kubernetes.client:CoreV1Api")(api_client)
