"""The pure rules of key sources beyond one vault."""

from __future__ import annotations

import pytest

from byok.errors import InvalidRequest
from byok.key_sources import (
    check_confidential_key,
    check_cross_tenant_region,
    check_hsm_activated,
    check_key_id,
    check_release_policy,
    check_rotation_window,
    check_store_named,
)

HSM_KEY = "https://contoso.managedhsm.azure.net/keys/cmk/0123456789abcdef0123456789abcdef"
VAULT_KEY = "https://contoso.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("key_id", "kind"),
    [
        (HSM_KEY, "managed-hsm"),
        (VAULT_KEY, "key-vault"),
        ("https://contoso.managedhsm.azure.cn/keys/cmk", "managed-hsm"),
        ("https://127.0.0.1:40123/keys/cmk/0123", "managed-hsm"),  # an emulator origin
        ("https://127.0.0.1:40123/keys/cmk/0123", "key-vault"),
    ],
)
def test_key_ids_of_their_store_kind_pass(key_id: str, kind: str) -> None:
    assert check_key_id("key_id", key_id, kind).name == "cmk"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key_id", "kind", "says"),
    [
        (VAULT_KEY, "managed-hsm", "(this host: key-vault)"),
        (HSM_KEY, "key-vault", "(this host: managed-hsm)"),
        ("https://contoso.example.com/keys/cmk", "key-vault", "(this host: neither store)"),
        ("https://contoso.managedhsm.azure.net/secrets/x", "managed-hsm", "not a Key Vault key"),
    ],
)
def test_key_ids_of_another_store_are_refused(key_id: str, kind: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_key_id("key_id", key_id, kind)  # type: ignore[arg-type]
    assert caught.value.field == "key_id" and caught.value.value == key_id
    assert says in caught.value.rule


def test_an_hsm_is_usable_once_active() -> None:
    check_hsm_activated("hsm", "hsm1", "Active")
    with pytest.raises(InvalidRequest, match=r"hsm = 'hsm1': .*not activated \(activationStatus"):
        check_hsm_activated("hsm", "hsm1", "NotActivated")


def test_cross_tenant_set_shares_its_key_region() -> None:
    check_cross_tenant_region("location", "West Europe", "westeurope")
    with pytest.raises(InvalidRequest, match=r"location = 'eastus': .*key's region \(westeurope\)"):
        check_cross_tenant_region("location", "eastus", "westeurope")


@pytest.mark.parametrize(
    ("exportable", "policy", "kty", "says"),
    [
        (False, {"data": "e30"}, "RSA-HSM", "must be exportable"),
        (True, None, "RSA-HSM", "needs a release policy"),
        (True, {"data": "e30"}, "RSA", "is an HSM key"),
    ],
)
def test_release_policy_and_exportable_go_together(
    exportable: bool, policy: object, kty: str, says: str
) -> None:
    check_release_policy("key", False, None, "RSA")
    check_release_policy("key", True, {"data": "e30"}, "EC-HSM")
    with pytest.raises(InvalidRequest, match=says):
        check_release_policy("key", exportable, policy, kty)


def test_confidential_set_key_is_an_exportable_rsa_hsm_key() -> None:
    check_confidential_key("key", "RSA-HSM", True, {"data": "e30"})
    for kty, exportable, policy in (("EC-HSM", True, {"data": "e30"}), ("RSA-HSM", False, None)):
        with pytest.raises(InvalidRequest, match="exportable RSA-HSM key"):
            check_confidential_key("key", kty, exportable, policy)


def test_rotation_window_holds_the_stop_and_start_time() -> None:
    check_rotation_window("maintenance_window_seconds", 600, 420.5)
    with pytest.raises(InvalidRequest, match=r"= 300: shorter .* \(420.5 s\)"):
        check_rotation_window("maintenance_window_seconds", 300, 420.5)


@pytest.mark.parametrize(
    ("kind", "vault", "hsm", "refused"),
    [
        ("key-vault", "kv", None, None),
        ("managed-hsm", None, "hsm1", None),
        ("managed-hsm", "kv", None, "hsm_name = None: required with key_store managed-hsm"),
        ("key-vault", None, "hsm1", "vault_name = None: required with key_store key-vault"),
    ],
)
def test_the_chosen_store_is_named(
    kind: str, vault: str | None, hsm: str | None, refused: str | None
) -> None:
    if refused is None:
        check_store_named(kind, vault, hsm)  # type: ignore[arg-type]
        return
    with pytest.raises(InvalidRequest) as caught:
        check_store_named(kind, vault, hsm)  # type: ignore[arg-type]
    assert str(caught.value) == refused
