"""Kubernetes API clients from a kubeconfig (the managed cluster's user credentials)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from clients.lazy import load

if TYPE_CHECKING:  # loaded on first use (clients.lazy)
    from kubernetes import client


def storage_api(kubeconfig: bytes) -> client.StorageV1Api:
    """The storage.k8s.io/v1 API of the kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig)
    api_client = load("kubernetes.config:new_client_from_config_dict")(config)
    return load("kubernetes.client:StorageV1Api")(api_client)
