"""Reads of IAM service IDs and their API keys the IBM image steps share (by name: IAM lets
several service IDs, and several API keys of one, carry the same name)."""

from __future__ import annotations

from typing import Any

from clients.ibm import IBMClients


def service_ids_named(clients: IBMClients, name: str) -> list[dict[str, Any]]:
    """The account's service IDs called `name`."""
    found = (
        clients.identity()
        .list_service_ids(account_id=clients.block.account_id, name=name)
        .get_result()
    )
    return [s for s in found.get("serviceids") or [] if s["name"] == name]


def api_keys_named(clients: IBMClients, iam_id: str, name: str) -> list[dict[str, Any]]:
    """The API keys called `name` of the identity `iam_id`."""
    keys = (
        clients.identity()
        .list_api_keys(account_id=clients.block.account_id, iam_id=iam_id)
        .get_result()
    )
    return [k for k in keys.get("apikeys") or [] if k["iam_id"] == iam_id and k["name"] == name]
