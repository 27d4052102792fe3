"""Credential blocks that point at an emulator."""

from __future__ import annotations

from blocks.azure import AzureCredentials
from emulator.server import Emulator


def emulator_azure_credentials(emulator: Emulator, **overrides: object) -> AzureCredentials:
    """An AzureCredentials block for the emulator's service principal and endpoints."""
    values: dict[str, object] = {
        "tenant_id": emulator.identity.tenant_id,
        "client_id": emulator.identity.client_id,
        "client_secret": emulator.identity.client_secret,
        "subscription_id": emulator.identity.subscription_id,
        "cloud": "Custom",
        "resource_manager_url": emulator.base_url + "/",
        "authority_host": emulator.base_url,
        "verify_keyvault_challenge_resource": False,
        "ca_bundle": str(emulator.ca_path),
        "polling_interval_seconds": 0.5,
    }
    values.update(overrides)
    return AzureCredentials(**values)


def save_emulator_block(emulator: Emulator, name: str) -> AzureCredentials:
    """Save (overwrite) the emulator's AzureCredentials block as `name`."""
    block = emulator_azure_credentials(emulator)
    block.save(name, overwrite=True)
    return block
