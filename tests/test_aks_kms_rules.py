"""The rules of KMS requests and of which Secrets still need re-writing (byok.aks_kms), with
the messages the flows refuse with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from byok.aks_kms import (
    ANNOTATION,
    annotated,
    check_experience,
    check_key_type,
    check_kubernetes,
    check_network,
    needs_rewrite,
)
from byok.errors import InvalidRequest

VERSIONED = "https://kv.vault.azure.net/keys/kms/0123456789abcdef"
VERSIONLESS = "https://kv.vault.azure.net/keys/kms"


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (
            lambda: check_experience("key_id", VERSIONED, "new"),
            f"key_id = '{VERSIONED}': the new KMS experience needs a versionless key id "
            f"(…/keys/<name>): use {VERSIONLESS}",
        ),
        (
            lambda: check_experience("key_id", VERSIONLESS, "legacy"),
            f"key_id = '{VERSIONLESS}': the legacy KMS experience needs a versioned key id "
            "(…/keys/<name>/<version>); a versionless id selects the new experience",
        ),
        (
            lambda: check_experience("key_id", "kms", "legacy"),
            "key_id = 'kms': 'kms' is not a Key Vault key id (https://<vault>/keys/<name>"
            "[/<version>])",
        ),
        (
            lambda: check_kubernetes("v", "1.32.5", "new"),
            "v = '1.32.5': the new KMS experience needs Kubernetes 1.33 or newer",
        ),
        (
            lambda: check_key_type("key_id", VERSIONED, "EC-HSM"),
            f"key_id = '{VERSIONED}': is a EC-HSM key; KMS needs an RSA key",
        ),
        (
            lambda: check_network("Private", None),
            "key_vault_resource_id = None: a private key vault (key_vault_network_access = "
            "Private) needs its resource id",
        ),
        (
            lambda: check_network("Public", "/subscriptions/s/vault"),
            "key_vault_resource_id = '/subscriptions/s/vault': only for "
            "key_vault_network_access = Private: leave it empty for a public vault",
        ),
    ],
)
def test_refusals(check: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check()  # type: ignore[operator]
    assert str(info.value) == message


def test_accepted() -> None:
    assert check_experience("key_id", VERSIONED, "legacy").version == "0123456789abcdef"
    assert check_experience("key_id", VERSIONLESS, "new").version is None
    check_kubernetes("v", "1.32", "legacy")
    check_kubernetes("v", "1.33", "new")
    check_key_type("key_id", VERSIONED, "RSA-HSM")
    check_network("Private", "/subscriptions/s/vault")


def test_which_secrets_need_rewriting() -> None:
    rotated = datetime(2026, 12, 1, tzinfo=UTC)
    before = {"metadata": {"creationTimestamp": "2026-11-30T00:00:00Z"}}
    after = {"metadata": {"creationTimestamp": (rotated + timedelta(seconds=1)).isoformat()}}
    assert needs_rewrite(before, VERSIONED, rotated)
    assert not needs_rewrite(after, VERSIONED, rotated)  # written under the current key
    assert needs_rewrite(after, VERSIONED, None)  # no rotation recorded: unknown key
    marked = annotated(before, VERSIONED)
    assert marked["metadata"]["annotations"] == {ANNOTATION: VERSIONED}
    assert not needs_rewrite(marked, VERSIONED, rotated)
    assert needs_rewrite(marked, VERSIONED + "0", rotated)
    assert before["metadata"] == {"creationTimestamp": "2026-11-30T00:00:00Z"}  # not mutated


def test_a_secret_made_in_the_second_of_the_rotation_counts_as_before_it() -> None:
    rotated = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)  # the tag has whole seconds
    secret = {"metadata": {"creationTimestamp": "2026-12-02T09:00:00.300000+00:00"}}
    assert needs_rewrite(secret, VERSIONED, rotated)
