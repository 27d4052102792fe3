"""Key Vault's service limits: weighted transactions per 10-second window per vault, five
vaults' worth per subscription and region, refused with a 429 `Throttled` that carries no
Retry-After."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient

from clients.azure import AzureClients
from emulator.server import Emulator
from emulator.services.keyvault.throttling import Throttled, VaultThrottle, transaction_cost
from emulator.throttling import Limits, Throttle
from tests.helpers import ManualClock, vault_with_key

SUB = "5f6a9e1c-0000-4000-8000-00000000b10c"


def spend(throttle: VaultThrottle, vault: str, cost: float, times: int) -> int:
    """How many of `times` transactions the vault's window took."""
    taken = 0
    for _ in range(times):
        try:
            throttle.take(vault, SUB, "westeurope", cost)
        except Throttled:
            continue
        taken += 1
    return taken


def test_a_vault_takes_twenty_software_key_creates_in_ten_seconds() -> None:
    clock = ManualClock()
    throttle = VaultThrottle(clock)
    create = transaction_cost("RSA", 2048, creates=True)
    assert spend(throttle, "kv1", create, 25) == 20
    clock.now += 9.9
    assert spend(throttle, "kv1", create, 1) == 0  # the window is still the first one
    clock.now += 0.1
    assert spend(throttle, "kv1", create, 25) == 20  # a new window
    assert spend(throttle, "kv2", create, 1) == 1  # each vault has its own


def test_transactions_are_weighted_by_key_type_and_summed() -> None:
    """The service's own example at today's limits: 249 RSA 4,096-bit HSM-key GETs (1/250
    each) leave room for 8 RSA 2,048-bit HSM-key GETs (1/2,000 each)."""
    throttle = VaultThrottle(ManualClock())
    assert spend(throttle, "kv", transaction_cost("RSA-HSM", 4096, creates=False), 249) == 249
    assert spend(throttle, "kv", transaction_cost("RSA-HSM", 2048, creates=False), 9) == 8
    assert transaction_cost("EC-HSM", None, creates=True) == 1 / 10
    assert transaction_cost(None, None, creates=False) == 1 / 4000


def test_a_subscription_takes_five_vaults_worth_in_a_region() -> None:
    throttle = VaultThrottle(ManualClock())
    create = transaction_cost("RSA", 2048, creates=True)
    taken = [spend(throttle, f"kv{i}", create, 20) for i in range(6)]
    assert taken == [20, 20, 20, 20, 20, 0]
    throttle.take("kv9", SUB, "northeurope", create)  # another region's window


def test_the_service_refuses_a_throttled_create_with_429_and_no_retry_after(
    emulator: Emulator, azure: AzureClients
) -> None:
    vault, _ = vault_with_key(azure, emulator, "rg", "kv-busy", "k0")
    emulator.throttle = Throttle(Limits())
    # the real SDK, without re-sends: what the service answers, as it answers it
    keys = KeyClient(
        str(vault.properties.vault_uri),
        azure.credential,
        retry_total=0,
        transport=azure.transport,
        verify_challenge_resource=False,  # the emulator's vaults are on 127.0.0.1
    )
    for n in range(20):
        keys.create_rsa_key(f"k{n + 1}", size=2048)
    with pytest.raises(HttpResponseError) as refused:
        keys.create_rsa_key("k21", size=2048)
    answer = refused.value.response
    assert answer is not None and answer.status_code == 429
    assert "Retry-After" not in answer.headers
    assert refused.value.error is not None and refused.value.error.code == "Throttled"
    with pytest.raises(HttpResponseError, match="Throttled"):
        keys.get_key("k1")  # the window is spent for every transaction
    emulator.throttle = None  # off again: no window
    keys.create_rsa_key("k21", size=2048)
    assert sorted(k.name for k in keys.list_properties_of_keys()) == sorted(
        f"k{n}" for n in range(22)
    )
