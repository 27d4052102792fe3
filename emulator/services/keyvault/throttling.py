"""Key Vault's service limits: transactions per 10 seconds per vault, weighted by key type.

"Azure Key Vault service limits" (https://learn.microsoft.com/azure/key-vault/general/
service-limits): per vault and region, in 10 seconds, creating RSA 2,048-bit or EC software
keys 20, HSM keys 10; other transactions on RSA 2,048-bit and EC keys 4,000 (HSM 2,000),
3,072-bit 1,000 (500), 4,096-bit 500 (250); secrets and vault transactions 4,000. The
thresholds are weighted and enforced on their sum (a transaction costs 1/its limit of the
window), and a subscription may spend 5 times a vault's limit across its vaults in a region.
A window starts with its first transaction and lasts 10 seconds; a refused transaction does
not count ("Azure Key Vault throttling guidance", https://learn.microsoft.com/azure/key-vault/
general/overview-throttling). The refusal is a 429 `Throttled` without Retry-After, as quoted
in https://github.com/vcsjones/AzureSignTool/issues/219; the guidance tells clients to back off
exponentially. Managed HSMs have limits of their own and are not throttled here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from emulator.http import HttpError

WINDOW_SECONDS = 10.0
SUBSCRIPTION_SHARE = 5  # a subscription's window holds this many vaults' worth
VAULT_TRANSACTIONS = 4000  # secrets, lists, policies and other vault transactions
# (creates, other transactions) per window for software keys; HSM keys get half of each
SOFTWARE_KEY_LIMITS = {2048: (20, 4000), 3072: (20, 1000), 4096: (20, 500)}
EC_LIMITS = (20, 4000)


class Throttled(HttpError):
    """Key Vault's 429 when a window is spent."""

    def __init__(self) -> None:
        super().__init__(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: "
            "VaultRequestTypeLimitReached",
        )


def transaction_cost(kty: str | None, size: int | None, creates: bool) -> float:
    """The share of a vault's window one transaction takes: on a key of type `kty` (RSA
    `size` bits; None: a vault transaction), creating a version or not."""
    if kty is None:
        return 1 / VAULT_TRANSACTIONS
    hsm = kty.upper().endswith("-HSM")
    if kty.upper().startswith("EC"):
        create, other = EC_LIMITS
    else:
        create, other = SOFTWARE_KEY_LIMITS.get(size or 2048, SOFTWARE_KEY_LIMITS[4096])
    limit = create if creates else other
    return 1 / (limit // 2 if hsm else limit)


@dataclass
class _Window:
    start: float
    spent: float = 0.0


class VaultThrottle:
    """The 10-second windows of every vault and of every subscription x region."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, window_seconds: float = WINDOW_SECONDS
    ) -> None:
        self._clock, self.window_seconds = clock, window_seconds
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, ...], _Window] = {}

    def take(self, vault_id: str, subscription: str, region: str, cost: float) -> None:
        """Spend `cost` of the vault's window and of its subscription's, or refuse
        (`Throttled`) spending nothing."""
        keys = [((vault_id.lower(),), 1.0), ((subscription.lower(), region), SUBSCRIPTION_SHARE)]
        with self._lock:
            now = self._clock()
            windows = [(self._window(key, now), size) for key, size in keys]
            # a sum of 1/limit steps: a little slack so that exactly `limit` of them fit
            if any(w.spent + cost > size + 1e-9 for w, size in windows):
                raise Throttled()
            for window, _ in windows:
                window.spent += cost

    def _window(self, key: tuple[str, ...], now: float) -> _Window:
        window = self._windows.get(key)
        if window is None or now - window.start >= self.window_seconds:
            window = self._windows[key] = _Window(now)
        return window
