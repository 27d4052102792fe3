"""Encrypt → verify → decrypt round trips on qemu-img made VHDs, paths and streams."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from byok.vhd import decrypt_vhd, encrypt_vhd, verify_vhd, vhd_info
from byok.vhd.format import BLOCK_SIZE, MAX_VIRTUAL_SIZE

from .conftest import KEY32, KEY64, ForwardOnly, MakeVhd

MIB = 1 << 20


def disk(size: int, zero_blocks: tuple[int, ...] = ()) -> bytes:
    data = bytearray(os.urandom(size))
    for b in zero_blocks:
        block = slice(b * BLOCK_SIZE, min((b + 1) * BLOCK_SIZE, size))
        data[block] = bytes(block.stop - block.start)
    return bytes(data)


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
@pytest.mark.parametrize(
    ("size", "zeros"),
    [(4 * MIB, ()), (7 * MIB + 512, (1,)), (3 * MIB - 1024, (0,)), (512, ())],
    ids=["whole-blocks", "odd-size-with-zero-block", "sparse-first", "one-sector"],
)
def test_roundtrip(
    make_vhd: MakeVhd, tmp_path: Path, subformat: str, size: int, zeros: tuple[int, ...]
) -> None:
    data = disk(size, zeros)
    src = make_vhd(data, subformat)
    enc = tmp_path / "enc.vhd"
    result = encrypt_vhd(src, enc, KEY64)
    blocks = -(-size // BLOCK_SIZE)
    assert result.virtual_size == blocks * BLOCK_SIZE
    assert result.blocks_written == blocks - len(zeros)
    verify_vhd(src, enc, KEY64)
    out = tmp_path / "plain.raw"
    decrypt_vhd(enc, out, KEY64, raw=True)
    plain = out.read_bytes()
    assert plain[:size] == data and not any(plain[size:])
    assert len(plain) == blocks * BLOCK_SIZE


def test_aes128_key_and_decrypt_to_vhd(make_vhd: MakeVhd, tmp_path: Path) -> None:
    data = disk(5 * MIB)
    src = make_vhd(data, "dynamic")
    enc = tmp_path / "enc.vhd"
    encrypt_vhd(src, enc, KEY32)
    plain_vhd = tmp_path / "plain.vhd"
    decrypt_vhd(enc, plain_vhd, KEY32)
    info = vhd_info(plain_vhd)
    assert info.keyhash is None and info.disk_type == "dynamic"
    verify_vhd(src, enc, KEY32)
    again = tmp_path / "again.vhd"
    encrypt_vhd(plain_vhd, again, KEY32)
    verify_vhd(src, again, KEY32)


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
@pytest.mark.parametrize("mode", ["stream-in", "stream-out", "stream-both"])
def test_streams_give_the_same_data(
    make_vhd: MakeVhd, tmp_path: Path, subformat: str, mode: str
) -> None:
    data = disk(6 * MIB + 4096, zero_blocks=(1,))
    src = make_vhd(data, subformat)
    reference = tmp_path / "ref.vhd"
    encrypt_vhd(src, reference, KEY64)
    out = io.BytesIO()
    with open(src, "rb") as handle:
        source = ForwardOnly(handle) if mode != "stream-out" else handle
        sink = ForwardOnly(out) if mode != "stream-in" else out
        encrypt_vhd(source, sink, KEY64)  # type: ignore[arg-type]
    produced = out.getvalue()
    expected = reference.read_bytes()
    # same layout and data; only the footer timestamp/UUID (and their checksums) differ
    assert len(produced) == len(expected)
    assert produced[1536:-512] == expected[1536:-512]
    verify_vhd(src, io.BytesIO(produced), KEY64)
    # decrypt from a stream to a stream
    plain = io.BytesIO()
    decrypt_vhd(ForwardOnly(io.BytesIO(produced)), ForwardOnly(plain), KEY64, raw=True)  # type: ignore[arg-type]
    assert plain.getvalue()[: len(data)] == data


def test_largest_sparse_disk(qemu_img: str, tmp_path: Path) -> None:
    raw = tmp_path / "max.raw"
    tail = os.urandom(BLOCK_SIZE + 4096)
    with open(raw, "wb") as handle:  # sparse: data only in the last block and a bit before
        handle.truncate(MAX_VIRTUAL_SIZE)
        handle.seek(MAX_VIRTUAL_SIZE - len(tail))
        handle.write(tail)
    src = tmp_path / "max.vhd"
    subprocess.run(
        [qemu_img, "convert", "-q", "-f", "raw", "-O", "vpc", "-o",
         "subformat=dynamic,force_size=on", str(raw), str(src)],
        check=True,
    )  # fmt: skip
    enc = tmp_path / "enc.vhd"
    result = encrypt_vhd(src, enc, KEY64)
    assert result.virtual_size == MAX_VIRTUAL_SIZE and result.blocks_written == 2
    info = vhd_info(enc)
    assert info.blocks_total == MAX_VIRTUAL_SIZE // BLOCK_SIZE and info.blocks_allocated == 2
    verify_vhd(src, enc, KEY64)
    out = tmp_path / "back.raw"
    decrypt_vhd(enc, out, KEY64, raw=True)
    with open(out, "rb") as handle:
        handle.seek(MAX_VIRTUAL_SIZE - len(tail))
        assert handle.read() == tail


def _without_footer_identity(image: bytes) -> bytes:
    """`image` with the timestamp, checksum and UUID of both footers blanked."""
    out = bytearray(image)
    for start in (0, len(out) - 512):
        out[start + 24 : start + 28] = bytes(4)
        out[start + 64 : start + 84] = bytes(20)
    return bytes(out)


@pytest.mark.parametrize("workers", [1, 2], ids=["one-core", "threads"])
@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_file_and_stream_outputs_have_one_layout(
    make_vhd: MakeVhd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    subformat: str,
    workers: int,
) -> None:
    """All-zero blocks are dropped on every path, allocated in the source or not, whether
    the blocks go through worker threads or (one core) through the calling thread alone."""
    monkeypatch.setattr("byok.vhd.pipeline.default_workers", lambda: workers)
    src = make_vhd(disk(7 * MIB, zero_blocks=(2,)), subformat)
    if subformat == "dynamic":  # an allocated block of zeros (qemu-img leaves none)
        raw = bytearray(src.read_bytes())
        table = int.from_bytes(raw[528:536], "big")
        start = int.from_bytes(raw[table : table + 4], "big") * 512 + 512
        raw[start : start + BLOCK_SIZE] = bytes(BLOCK_SIZE)
        src.write_bytes(bytes(raw))
    outputs = {}
    for mode in ("file-file", "file-stream", "stream-file", "stream-stream"):
        with open(src, "rb") as handle:
            source = ForwardOnly(handle) if mode.startswith("stream") else handle
            if mode.endswith("file"):
                dst = tmp_path / f"{mode}.vhd"
                result = encrypt_vhd(source, dst, KEY64)  # type: ignore[arg-type]
                outputs[mode] = dst.read_bytes()
            else:
                out = io.BytesIO()
                result = encrypt_vhd(source, ForwardOnly(out), KEY64)  # type: ignore[arg-type]
                outputs[mode] = out.getvalue()
        zero_blocks = 2 if subformat == "dynamic" else 1
        assert result.blocks_written == 4 - zero_blocks, mode
    reference = _without_footer_identity(outputs["file-file"])
    for mode, image in outputs.items():
        assert _without_footer_identity(image) == reference, mode
    verify_vhd(src, tmp_path / "stream-file.vhd", KEY64)
