"""A key's dependents, with their paths, from discovery rows."""

from __future__ import annotations

import pytest

from byok.errors import InvalidRequest
from byok.inventory.blast import blast_radius, parse_any_key
from byok.inventory.ibm import key_protect_id
from byok.inventory.models import Kind

SUB = "s1"
RG = f"/subscriptions/{SUB}/resourceGroups/rg/providers"
KEY = "https://kv1.vault.azure.net/keys/k1"
DES_ID = f"{RG}/Microsoft.Compute/diskEncryptionSets/des1"
VM_ID = f"{RG}/Microsoft.Compute/virtualMachines/vm1"
ROWS = [
    {
        "id": DES_ID,
        "type": "microsoft.compute/diskencryptionsets",
        "subscriptionId": SUB,
        "properties": {"activeKey": {"keyUrl": f"{KEY}/v2"}},
    },
    {
        "id": f"{RG}/Microsoft.Compute/disks/d1",
        "type": "microsoft.compute/disks",
        "subscriptionId": SUB,
        "managedBy": VM_ID,
        "properties": {"encryption": {"diskEncryptionSetId": DES_ID}},
    },
    {
        "id": f"{RG}/Microsoft.ContainerRegistry/registries/r1",
        "type": "microsoft.containerregistry/registries",
        "subscriptionId": SUB,
        "properties": {
            "encryption": {
                "status": "enabled",
                "keyVaultProperties": {"versionedKeyIdentifier": f"{KEY}/v1"},
            }
        },
    },
    {
        "id": f"{RG}/Microsoft.ContainerRegistry/registries/other",
        "type": "microsoft.containerregistry/registries",
        "subscriptionId": SUB,
        "properties": {
            "encryption": {
                "status": "enabled",
                "keyVaultProperties": {"keyIdentifier": "https://kv1.vault.azure.net/keys/k2"},
            }
        },
    },
]


def test_every_version_of_a_key_and_the_paths_to_it() -> None:
    found = {(d.kind, d.resource_id.rsplit("/", 1)[-1]): d.path for d in blast_radius(KEY, ROWS)}
    assert set(found) == {
        (Kind.DISK_ENCRYPTION_SET, "des1"),
        (Kind.DISK, "d1"),
        (Kind.REGISTRY, "r1"),
    }
    assert found[(Kind.DISK, "d1")] == [
        f"{KEY}/v2",
        DES_ID,
        f"{RG}/Microsoft.Compute/disks/d1",
        VM_ID,
    ]


def test_one_version_only_when_asked() -> None:
    found = {d.resource_id.rsplit("/", 1)[-1] for d in blast_radius(f"{KEY}/v1", ROWS)}
    assert found == {"r1"}


def test_a_malformed_key_id_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="key_id = 'kv1/k1': must be a Key Vault key id"):
        blast_radius("kv1/k1", ROWS)


KP_ID = "5f2a6d0e-8c1b-4f3e-9a7d-0b1c2d3e4f50"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (f"crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:{KP_ID}", KP_ID),
        (KP_ID.upper(), KP_ID),
        (f"crn:v1:bluemix:public:is:us-south:a/acct::image:{KP_ID}", None),
        (f"{KEY}/{KP_ID}", None),
    ],
)
def test_key_protect_ids_from_an_id_or_a_crn(ref: str, expected: str | None) -> None:
    assert key_protect_id(ref) == expected
    if expected is None and not ref.startswith("https://"):
        with pytest.raises(InvalidRequest, match="or a Key Protect key id or CRN"):
            parse_any_key(ref)
