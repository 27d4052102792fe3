"""Kubernetes API clients from a kubeconfig (the managed cluster's user credentials)."""

from __future__ import annotations

import yaml
from kubernetes import client, config


def storage_api(kubeconfig: bytes) -> client.StorageV1Api:
    """The storage.k8s.io/v1 API of the kubeconfig's current context."""
    api_client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    return client.StorageV1Api(api_client)
