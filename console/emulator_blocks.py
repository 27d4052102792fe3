"""Credential blocks that point at an emulator."""

from __future__ import annotations

from blocks.azure import AzureCredentials
from blocks.ibm import IBMCloudCredentials
from emulator.server import Emulator
from emulator.services.ibm_iam.models import IbmIdentity


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


def emulator_ibm_credentials(
    emulator: Emulator, account: IbmIdentity | None = None, **overrides: object
) -> IBMCloudCredentials:
    """An IBMCloudCredentials block for an IBM account of the emulator (default: the seeded
    one): its user's API key with Administrator access, its COS HMAC key, the endpoints."""
    ibm = account or emulator.ibm_identity
    values: dict[str, object] = {
        "api_key": ibm.api_key,
        "account_id": ibm.account_id,
        "region": ibm.region,
        "iam_url": emulator.base_url,
        "key_protect_url": emulator.base_url,
        "cos_endpoint": emulator.cos.endpoint,
        "cos_hmac_access_key_id": ibm.cos_hmac_access_key_id,
        "cos_hmac_secret_access_key": ibm.cos_hmac_secret_access_key,
        "softlayer_url": emulator.base_url + "/rest/v3.1",
        "vpc_url": emulator.base_url + "/v1",
        "ca_bundle": str(emulator.ca_path),
    }
    values.update(overrides)
    return IBMCloudCredentials(**values)


def save_emulator_ibm_block(
    emulator: Emulator, name: str, account: IbmIdentity | None = None
) -> IBMCloudCredentials:
    """Save (overwrite) the IBMCloudCredentials block of an emulator's account as `name`."""
    block = emulator_ibm_credentials(emulator, account)
    block.save(name, overwrite=True)
    return block
