"""The image version request's pure parts: the CLI encryption string, sources, regions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byok.gallery import (
    DataDiskEncryption,
    ImageSource,
    ImageVersionRequest,
    RegionEncryption,
    TargetRegion,
    encryption_of,
    format_target_region_encryption,
    parse_target_region_encryption,
    same_encryption,
)

des_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True)


@given(
    os_des=st.one_of(st.none(), des_names),
    data=st.dictionaries(st.integers(0, 63), des_names, max_size=6),
)
def test_cli_form_round_trips(os_des: str | None, data: dict[int, str]) -> None:
    encryption = RegionEncryption(
        os_disk_encryption_set=os_des,
        data_disks=[DataDiskEncryption(lun=k, disk_encryption_set=v) for k, v in data.items()],
    )
    assert parse_target_region_encryption(format_target_region_encryption(encryption)) == (
        encryption
    )


def test_cli_form_of_the_doc() -> None:
    parsed = parse_target_region_encryption("WestUSDiskEncryptionSet1,0,WestUSDiskEncryptionSet2")
    assert parsed.os_disk_encryption_set == "WestUSDiskEncryptionSet1"
    assert parsed.data_disks == [
        DataDiskEncryption(lun=0, disk_encryption_set="WestUSDiskEncryptionSet2")
    ]


@pytest.mark.parametrize("bad", ["des1,0", "des1,x,des2", "des1,0,", "des1,0,d,0,d"])
def test_malformed_cli_forms_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_target_region_encryption(bad)


def test_target_region_accepts_the_cli_string() -> None:
    region = TargetRegion(name="eastus", encryption="os-des,1,data-des")
    assert region.encryption is not None and region.encryption.data_disks[0].lun == 1


@pytest.mark.parametrize(
    "source",
    [
        {},
        {"managed_image_id": "/a", "image_version_id": "/b"},
        {"data_disk_snapshots": {0: "/s"}},
    ],
)
def test_exactly_one_source(source: dict) -> None:
    with pytest.raises(ValueError, match="source"):
        ImageSource(**source)


def test_snapshot_source_storage_profile() -> None:
    source = ImageSource(os_disk_snapshot_id="/os", data_disk_snapshots={1: "/d1", 0: "/d0"})
    assert source.storage_profile().as_dict() == {
        "osDiskImage": {"source": {"id": "/os"}},
        "dataDiskImages": [
            {"lun": 0, "source": {"id": "/d0"}},
            {"lun": 1, "source": {"id": "/d1"}},
        ],
    }


def test_unknown_storage_type_is_refused_naming_it() -> None:
    from byok.parameters import parse_request
    from byok.validation import InvalidRequest

    with pytest.raises(InvalidRequest) as info:
        parse_request(TargetRegion, {"name": "eastus", "storage_account_type": "Fast"})
    assert str(info.value).startswith(
        "request.storage_account_type = 'Fast': Input should be 'Standard_LRS', 'Standard_ZRS'"
    )


@pytest.mark.parametrize("encryption", [None, "", {}, {"data_disks": []}, ",0,des-data"])
def test_a_region_without_an_os_disk_set_is_refused(encryption: object) -> None:
    from byok.parameters import parse_request
    from byok.validation import InvalidRequest

    region: dict[str, object] = {"name": "westeurope"}
    if encryption is not None:
        region["encryption"] = encryption
    request = {
        "azure_credentials_block": "b",
        "resource_group": "rg",
        "location": "westeurope",
        "gallery_name": "g",
        "image_name": "i",
        "version": "1.0.0",
        "source": {"managed_image_id": "/i"},
        "target_regions": [{"name": "eastus", "encryption": "des-os"}, region],
    }
    with pytest.raises(InvalidRequest) as info:
        parse_request(ImageVersionRequest, request)
    assert info.value.field == "request.target_regions[1].encryption"
    assert "needs a disk encryption set (customer-managed key) for the OS disk" in info.value.rule


def test_the_cli_form_travels_typed_to_the_sdk_body_and_back() -> None:
    """`--target-region-encryption` strings at the edge; the body has set ids (names resolved
    in the image's resource group), and the encryption read back from it compares equal,
    whatever the case of the ids."""
    from azure.mgmt.compute.models import GalleryImageVersion

    sub = "00000000-0000-0000-0000-000000000001"
    elsewhere = "/subscriptions/x/resourceGroups/o/providers/Microsoft.Compute/diskEncryptionSets/d"
    request = ImageVersionRequest(
        azure_credentials_block="b",
        resource_group="rg",
        location="westeurope",
        gallery_name="g",
        image_name="i",
        version="1.0.0",
        source=ImageSource(managed_image_id="/i"),
        target_regions=[
            TargetRegion.model_validate({"name": "West Europe", "encryption": "des-os,0,des-data"}),
            TargetRegion.model_validate({"name": "eastus", "encryption": elsewhere}),
        ],
    )
    body = request.to_sdk(sub).as_dict()
    regions = body["properties"]["publishingProfile"]["targetRegions"]
    home = f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets"
    assert regions[0]["encryption"] == {
        "osDiskImage": {"diskEncryptionSetId": f"{home}/des-os"},
        "dataDiskImages": [{"lun": 0, "diskEncryptionSetId": f"{home}/des-data"}],
    }
    assert regions[1]["encryption"] == {"osDiskImage": {"diskEncryptionSetId": elsewhere}}
    assert body["properties"]["storageProfile"] == {"source": {"id": "/i"}}
    read_back = GalleryImageVersion(
        {"properties": {"publishingProfile": {"targetRegions": [
            {**r, "encryption": {k: _upper(v) for k, v in r["encryption"].items()}}
            for r in regions
        ]}}}
    )  # fmt: skip
    wanted = request.encryption_by_region(sub)
    assert sorted(wanted) == ["eastus", "westeurope"]
    assert same_encryption(encryption_of(read_back), wanted)
    assert not same_encryption(encryption_of(read_back), {"westeurope": wanted["westeurope"]})
    assert request.set_references(sub) == {
        "target_regions[0].encryption.os_disk_encryption_set": (f"{home}/des-os", "West Europe"),
        "target_regions[0].encryption.data_disks[lun 0]": (f"{home}/des-data", "West Europe"),
        "target_regions[1].encryption.os_disk_encryption_set": (elsewhere, "eastus"),
    }


def _upper(value: object) -> object:
    """The same encryption with its set ids in upper case (as ARM may answer)."""
    if isinstance(value, dict):
        return {k: _upper(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_upper(v) for v in value]
    return value.upper() if isinstance(value, str) else value
