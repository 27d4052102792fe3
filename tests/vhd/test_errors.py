"""Every bad input is refused with a clear error naming the offset or the reason."""

from __future__ import annotations

import io
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from byok.vhd import (
    VhdFormatError,
    VhdKeyError,
    VhdOutputError,
    VhdVerifyError,
    decrypt_vhd,
    encrypt_vhd,
    load_key,
    validate_key,
    verify_vhd,
    vhd_info,
)
from byok.vhd.format import checksum
from byok.vhd.xts import SectorXts

from .conftest import KEY64, ForwardOnly, MakeVhd

MIB = 1 << 20


def patch(path: Path, offset: int, data: bytes, fix_footer_at: int | None = None) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    if fix_footer_at is not None:
        sector = raw[fix_footer_at : fix_footer_at + 512]
        sector[64:68] = bytes(4)
        sector[64:68] = struct.pack(">I", checksum(sector))
        raw[fix_footer_at : fix_footer_at + 512] = sector
    path.write_bytes(bytes(raw))


@pytest.fixture
def dynamic(make_vhd: MakeVhd) -> Path:
    return make_vhd(os.urandom(3 * MIB), "dynamic")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw.__setitem__(slice(-512, -504), b"XXXXXXXX"), "expected footer cookie"),
        (lambda raw: raw.__setitem__(slice(-464, -456), struct.pack(">Q", 5 * MIB)), "checksum"),
        (lambda raw: raw.__delitem__(slice(-512, None)), "expected footer cookie"),
    ],
    ids=["bad-cookie", "bad-checksum", "missing"],
)
def test_bad_trailing_footer_falls_back_to_the_copy(
    dynamic: Path,
    tmp_path: Path,
    damage: Callable[[bytearray], None],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """vhd-util reads the footer copy at offset 0 when the trailing one is unusable."""
    raw = bytearray(dynamic.read_bytes())
    good = tmp_path / "good.vhd"
    good.write_bytes(raw)
    damage(raw)
    dynamic.write_bytes(bytes(raw))
    assert vhd_info(dynamic).virtual_size == 3 * MIB
    assert f"{reason}" in caplog.text and "using the footer copy at offset 0" in caplog.text
    enc = tmp_path / "enc.vhd"
    encrypt_vhd(dynamic, enc, KEY64)
    verify_vhd(good, enc, KEY64)


def test_bad_trailing_footer_and_copy(dynamic: Path) -> None:
    size = dynamic.stat().st_size
    patch(dynamic, size - 512, b"XXXXXXXX")
    patch(dynamic, 0, b"YYYYYYYY")
    with pytest.raises(VhdFormatError, match=rf"offset {size - 512}: expected footer cookie"):
        vhd_info(dynamic)


def test_fixed_footer_is_not_searched_at_offset_0(make_vhd: MakeVhd, tmp_path: Path) -> None:
    fixed = make_vhd(os.urandom(MIB), "fixed")
    raw = fixed.read_bytes()
    copy = tmp_path / "copy.vhd"  # a fixed disk whose data starts with a (fixed) footer
    copy.write_bytes(raw[-512:] + raw[512:-512] + b"X" * 512)
    with pytest.raises(VhdFormatError, match=rf"offset {MIB}: expected footer cookie"):
        vhd_info(copy)


def test_bad_header_cookie_and_checksum(dynamic: Path, tmp_path: Path) -> None:
    broken = tmp_path / "b.vhd"
    broken.write_bytes(dynamic.read_bytes())
    patch(broken, 512, b"cxsparsX")
    with pytest.raises(VhdFormatError, match="offset 512: expected dynamic header cookie"):
        vhd_info(broken)
    patch(dynamic, 512 + 28, struct.pack(">I", 7))
    with pytest.raises(VhdFormatError, match="offset 512: dynamic header checksum"):
        vhd_info(dynamic)


def test_footer_copy_mismatch(dynamic: Path) -> None:
    patch(dynamic, 24, struct.pack(">I", 12345), fix_footer_at=0)
    with pytest.raises(VhdFormatError, match="offset 0: expected the footer copy to match"):
        vhd_info(dynamic)


def test_differencing_disk_refused(qemu_img: str, dynamic: Path, tmp_path: Path) -> None:
    child = tmp_path / "child.vhd"
    try:
        subprocess.run([qemu_img, "create", "-q", "-f", "vpc", "-b", str(dynamic), "-F", "vpc",
                        str(child)], check=True, capture_output=True)  # fmt: skip
    except subprocess.CalledProcessError:  # qemu cannot create differencing VHDs: fake one
        child.write_bytes(dynamic.read_bytes())
        size = child.stat().st_size
        patch(child, 60, struct.pack(">I", 4), fix_footer_at=0)
        patch(child, size - 512 + 60, struct.pack(">I", 4), fix_footer_at=size - 512)
    with pytest.raises(VhdFormatError, match="differencing disks are not supported"):
        encrypt_vhd(child, tmp_path / "out.vhd", KEY64)
    assert not (tmp_path / "out.vhd").exists()


def test_not_a_vhd(tmp_path: Path) -> None:
    junk = tmp_path / "junk.vhd"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(VhdFormatError, match="offset 3584: expected footer cookie 'conectix'"):
        vhd_info(junk)
    with pytest.raises(VhdFormatError, match=r"fixed VHD footer|footer cookie"):
        encrypt_vhd(ForwardOnly(io.BytesIO(b"x" * 5000)), io.BytesIO(), KEY64)  # type: ignore[arg-type]


def test_truncated_dynamic(dynamic: Path, tmp_path: Path) -> None:
    """A BAT pointing past the end of the file is refused, by `info` too."""
    cut = tmp_path / "cut.vhd"
    raw = dynamic.read_bytes()
    cut.write_bytes(raw[:2048] + raw[-512:])
    past = "offset 1536: BAT entry 0 points at sector 4 .* past the data, which ends at offset 2048"
    with pytest.raises(VhdFormatError, match=past):
        vhd_info(cut)
    with pytest.raises(VhdFormatError, match=past):
        encrypt_vhd(cut, tmp_path / "o.vhd", KEY64)
    with open(cut, "rb") as handle, pytest.raises(VhdFormatError, match="ends inside block 0"):
        encrypt_vhd(ForwardOnly(handle), io.BytesIO(), KEY64)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (bytes(range(32)) + b"\n", "trailing newline"),
        (bytes(range(64)) + b"\n", "trailing newline"),
        (bytes(31), "expected exactly 32 or 64"),
        (bytes(48), "expected exactly 32 or 64"),
        (b"", "expected exactly 32 or 64"),
        (bytes(64), "halves of the AES-XTS key are identical"),
    ],
)
def test_bad_keys(key: bytes, message: str, tmp_path: Path) -> None:
    with pytest.raises(VhdKeyError, match=message):
        validate_key(key)
    path = tmp_path / "key"
    path.write_bytes(key)
    with pytest.raises(VhdKeyError, match=message):
        load_key(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(VhdKeyError, match="cannot read key file"):
        load_key(tmp_path / "nope")


def test_overwrite_refused(dynamic: Path, tmp_path: Path) -> None:
    dst = tmp_path / "exists.vhd"
    dst.write_bytes(b"keep me")
    with pytest.raises(VhdOutputError, match="refusing to overwrite"):
        encrypt_vhd(dynamic, dst, KEY64)
    assert dst.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_wrong_key_and_tampering(dynamic: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc.vhd"
    encrypt_vhd(dynamic, enc, KEY64)
    other = bytes(range(1, 65))
    with pytest.raises(VhdKeyError, match="wrong key"):
        verify_vhd(dynamic, enc, other)
    with pytest.raises(VhdFormatError, match="expected a tdbatmap header with a keyhash"):
        verify_vhd(dynamic, dynamic, KEY64)
    raw = bytearray(enc.read_bytes())
    bat0 = struct.unpack(">I", raw[1536:1540])[0] * 512
    raw[bat0 + 512 + 1000] ^= 1
    enc.write_bytes(bytes(raw))
    with pytest.raises(VhdVerifyError, match="differs from the source at virtual offset 992"):
        verify_vhd(dynamic, enc, KEY64)


def _bat_offset(path: Path) -> int:
    return int(struct.unpack_from(">Q", path.read_bytes(), 512 + 16)[0])


def test_already_encrypted_refused_unless_forced(dynamic: Path, tmp_path: Path) -> None:
    enc, twice = tmp_path / "enc.vhd", tmp_path / "twice.vhd"
    encrypt_vhd(dynamic, enc, KEY64)
    with pytest.raises(VhdFormatError, match=r"already carries a keyhash.*\(--force\)"):
        encrypt_vhd(enc, twice, KEY64)
    assert not twice.exists() and not list(tmp_path.glob("*.part"))
    other = bytes(range(100, 164))
    encrypt_vhd(enc, twice, other, force=True)
    inner, once = tmp_path / "inner.raw", tmp_path / "once.raw"
    decrypt_vhd(twice, inner, other, raw=True)  # the first encryption's data, as stored
    decrypt_vhd(enc, once, KEY64, raw=True)
    assert SectorXts(KEY64).decrypt(inner.read_bytes(), 0) == once.read_bytes()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (lambda first: 0, r"BAT entry 0 points at sector 0 \(offset 0\), inside the VHD metadata"),
        (lambda first: 2, r"BAT entry 0 points at sector 2 .* inside the VHD metadata"),
        (lambda first: first + 1, r"BAT entry 1 points at sector \d+ .* overlaps the record of "),
    ],
    ids=["sector-0", "into-the-header", "overlap"],
)
def test_bat_entry_into_metadata_or_another_block(
    dynamic: Path, tmp_path: Path, entry: Callable[[int], int], message: str
) -> None:
    table = _bat_offset(dynamic)
    first = struct.unpack_from(">I", dynamic.read_bytes(), table)[0]
    slot = table + 4 if "overlap" in message else table
    patch(dynamic, slot, struct.pack(">I", entry(first)))
    with pytest.raises(VhdFormatError, match=message):
        vhd_info(dynamic)
    with pytest.raises(VhdFormatError, match=message):
        encrypt_vhd(dynamic, tmp_path / "out.vhd", KEY64)
    assert not (tmp_path / "out.vhd").exists()


def test_fixed_size_not_a_multiple_of_512(make_vhd: MakeVhd, tmp_path: Path) -> None:
    fixed = make_vhd(os.urandom(MIB), "fixed")
    size = fixed.stat().st_size
    patch(
        fixed, size - 512 + 40, struct.pack(">QQ", MIB - 100, MIB - 100), fix_footer_at=size - 512
    )
    message = rf"offset {size - 512 + 48}: expected a virtual size that is a multiple of 512, "
    with pytest.raises(VhdFormatError, match=message + f"found {MIB - 100}"):
        vhd_info(fixed)
    with open(fixed, "rb") as handle, pytest.raises(VhdFormatError, match="multiple of 512"):
        encrypt_vhd(ForwardOnly(handle), io.BytesIO(), KEY64)  # type: ignore[arg-type]
