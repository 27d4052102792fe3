"""The encrypted output has exactly vhd-util's structure; qemu-img and libvhdi accept it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from byok.vhd import decrypt_vhd, encrypt_vhd, keyhash
from byok.vhd.format import BLOCK_SIZE, Footer, checksum
from byok.vhd.reader import VhdReader
from byok.vhd.xts import SectorXts

from .conftest import KEY64, ForwardOnly, MakeVhd

MIB = 1 << 20


@pytest.fixture
def encrypted(make_vhd: MakeVhd, tmp_path: Path) -> tuple[bytes, Path, bytes]:
    data = bytearray(os.urandom(9 * MIB - 512))
    data[2 * MIB : 4 * MIB] = bytes(2 * MIB)  # block 1 all zero
    src = make_vhd(bytes(data), "fixed")
    enc = tmp_path / "enc.vhd"
    encrypt_vhd(src, enc, KEY64)
    return bytes(data), enc, enc.read_bytes()


def test_keyhash_known_answer() -> None:
    digest = keyhash(KEY64)
    assert digest == hashlib.sha256(bytes(32) + KEY64).digest()
    assert digest.hex().startswith("dc7a4801") and digest.hex().endswith("795c")


def test_layout(encrypted: tuple[bytes, Path, bytes]) -> None:
    data, _, out = encrypted
    footer, copy = out[-512:], out[:512]
    assert footer == copy
    assert footer[:8] == b"conectix"
    assert footer[28:32] == b"tap\0" and struct.unpack(">I", footer[32:36])[0] == 0x00010003
    assert struct.unpack(">I", footer[60:64])[0] == 3
    size = 5 * BLOCK_SIZE  # 9 MiB - 512 rounded up to whole 2 MiB blocks
    assert struct.unpack(">QQ", footer[40:56]) == (size, size)
    assert struct.unpack(">Q", footer[16:24])[0] == 512
    zeroed = footer[:64] + bytes(4) + footer[68:]
    assert struct.unpack(">I", footer[64:68])[0] == checksum(zeroed)

    header = out[512:1536]
    assert header[:8] == b"cxsparse"
    offset, version, entries, block = struct.unpack(">QIII", header[16:36])
    assert (offset, version, entries, block) == (1536, 0x00010000, 5, BLOCK_SIZE)
    zeroed = header[:36] + bytes(4) + header[40:]
    assert struct.unpack(">I", header[36:40])[0] == checksum(zeroed)

    bat = struct.unpack(">5I", out[1536 : 1536 + 20])
    assert bat[1] == 0xFFFFFFFF  # the all-zero block stays unallocated
    assert out[1556:2048] == b"\xff" * (2048 - 1556)  # BAT padding

    bm = out[2048:2560]  # tdbatmap header right after the 512-padded BAT
    assert bm[:8] == b"tdbatmap"
    map_off, map_secs, map_ver, map_sum = struct.unpack(">QIII", bm[8:28])
    assert (map_off, map_secs, map_ver) == (2560, 1, 0x00010002)
    batmap = out[2560:3072]
    assert batmap[0] == 0b10111000 and not any(batmap[1:])
    assert map_sum == ~sum(batmap) & 0xFFFFFFFF
    assert bm[29] == 1 and bm[30:62] == bytes(32) and bm[62:94] == keyhash(KEY64)

    previous = 0
    for index, entry in enumerate(bat):
        if entry == 0xFFFFFFFF:
            continue
        start = entry * 512
        assert start > previous and (start + 512) % 4096 == 0  # data 4 KiB aligned, ascending
        previous = start
        assert out[start : start + 512] == b"\xff" * 512  # all-ones bitmap
        plain = data[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE]
        plain = plain + bytes(BLOCK_SIZE - len(plain))
        stored = out[start + 512 : start + 512 + BLOCK_SIZE]
        assert stored == bytes(SectorXts(KEY64).encrypt(plain, index * 4096))
    assert len(out) == previous + 512 + BLOCK_SIZE + 512  # footer right after the last block


def test_qemu_img_accepts_output(
    qemu_img: str, encrypted: tuple[bytes, Path, bytes], tmp_path: Path
) -> None:
    _, enc, _ = encrypted
    command = [qemu_img, "info", "--output=json", str(enc)]
    info = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "vpc" and info["virtual-size"] == 5 * BLOCK_SIZE
    check = subprocess.run([qemu_img, "check", str(enc)], capture_output=True, text=True)
    # qemu's vpc driver has no consistency check: it must open the image and say just that
    assert check.returncode == 0 or (
        check.returncode == 63 and "does not support checks" in check.stderr
    ), check.stderr
    # qemu reads our BAT and blocks exactly as we do: its raw view is our ciphertext view
    raw = tmp_path / "qemu.raw"
    subprocess.run([qemu_img, "convert", "-q", "-O", "raw", str(enc), str(raw)], check=True)
    ours = bytearray(5 * BLOCK_SIZE)
    with VhdReader(enc) as reader:
        for index, block, _ in reader.blocks():
            ours[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE] = block
    assert np.array_equal(np.fromfile(raw, dtype=np.uint8), np.frombuffer(ours, dtype=np.uint8))


@pytest.fixture
def vhdiinfo() -> str:
    """Path of libvhdi's vhdiinfo (Debian libvhdi-utils), an independent VHD reader."""
    path = shutil.which("vhdiinfo")
    if path is None:
        pytest.skip("vhdiinfo (Debian package libvhdi-utils) is not installed")
    return path


def test_libvhdi_accepts_every_output(
    vhdiinfo: str, make_vhd: MakeVhd, tmp_path: Path, encrypted: tuple[bytes, Path, bytes]
) -> None:
    """Encrypted (file and stream paths), decrypted and empty images all open in libvhdi."""
    _, enc, _ = encrypted
    outputs = {"encrypted": enc}
    src = make_vhd(os.urandom(3 * MIB + 512), "fixed")
    with open(src, "rb") as handle:
        stream = io.BytesIO()
        encrypt_vhd(ForwardOnly(handle), ForwardOnly(stream), KEY64)  # type: ignore[arg-type]
    outputs["spooled"] = tmp_path / "spooled.vhd"
    outputs["spooled"].write_bytes(stream.getvalue())
    outputs["decrypted"] = tmp_path / "decrypted.vhd"
    decrypt_vhd(enc, outputs["decrypted"], KEY64)
    outputs["empty"] = tmp_path / "empty.vhd"
    encrypt_vhd(make_vhd(bytes(MIB), "dynamic"), outputs["empty"], KEY64)
    for name, path in outputs.items():
        run = subprocess.run([vhdiinfo, str(path)], capture_output=True, text=True)
        assert run.returncode == 0 and "Disk type\t\t: Dynamic" in run.stdout, (name, run.stderr)
        size = Footer.parse(path.read_bytes()[-512:], 0).current_size
        assert f"({size} bytes)" in run.stdout, name
    broken = tmp_path / "broken.vhd"  # the check can fail: no usable footer anywhere
    broken.write_bytes(b"\0" * 512 + enc.read_bytes()[512:-512] + b"\0" * 512)
    assert subprocess.run([vhdiinfo, str(broken)], capture_output=True).returncode != 0
