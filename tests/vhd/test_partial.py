"""Blocks whose sector bitmap is partly clear (as tapdisk writes them) read as zeros there.

Both directions, over random partial bitmaps: a partial plain source through our encrypt and
decrypt; and a hand-built tapdisk-style encrypted image (partial bitmap, junk or zeros in the
clear sectors) through our decrypt and verify. Sources are in memory, forward-only streams, or
regular files (whose whole blocks the pipeline maps instead of reading).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byok.vhd import VhdVerifyError, decrypt_vhd, encrypt_vhd, verify_vhd
from byok.vhd.format import BLOCK_SIZE, SECTOR, SECTORS_PER_BLOCK
from byok.vhd.reader import VhdReader

from .conftest import KEY64, ForwardOnly

SIZE = 2 * BLOCK_SIZE + 5 * SECTOR  # three blocks, the last one mostly past the end
BLOCKS = 3


class Images:
    """The virtual disk (zero-padded to whole blocks), its qemu-img dynamic VHD, and our
    encryption of that."""

    def __init__(self, data: bytes, plain: bytes, encrypted: bytes) -> None:
        self.data, self.plain, self.encrypted = data, plain, encrypted

    def __repr__(self) -> str:  # a failing example must not print 12 MiB
        return "Images(...)"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img (Debian package qemu-utils) is not installed")
    work = tmp_path_factory.mktemp("partial")
    data = os.urandom(SIZE)
    (work / "src.raw").write_bytes(data)
    subprocess.run(
        [qemu_img, "convert", "-q", "-f", "raw", "-O", "vpc", "-o",
         "subformat=dynamic,force_size=on", str(work / "src.raw"), str(work / "src.vhd")],
        check=True,
    )  # fmt: skip
    encrypt_vhd(work / "src.vhd", work / "enc.vhd", KEY64)
    padded = data + bytes(BLOCKS * BLOCK_SIZE - SIZE)
    return Images(padded, (work / "src.vhd").read_bytes(), (work / "enc.vhd").read_bytes())


def clear_runs() -> st.SearchStrategy[np.ndarray]:
    """One block's clear sectors (True = bit clear): a few runs, or random bits."""
    runs = st.lists(
        st.tuples(st.integers(0, SECTORS_PER_BLOCK - 1), st.integers(1, SECTORS_PER_BLOCK)),
        max_size=4,
    ).map(_from_runs)
    bits = st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).random(SECTORS_PER_BLOCK) < 0.5
    )
    return st.one_of(runs, bits)


def _from_runs(runs: list[tuple[int, int]]) -> np.ndarray:
    clear = np.zeros(SECTORS_PER_BLOCK, dtype=bool)
    for start, length in runs:
        clear[start : start + length] = True
    return clear


def bat(image: bytes) -> list[int]:
    """File offsets of the block records, from the dynamic header's BAT offset."""
    table = struct.unpack_from(">Q", image, 512 + 16)[0]
    return [struct.unpack_from(">I", image, table + 4 * i)[0] * SECTOR for i in range(BLOCKS)]


def with_bitmaps(image: bytes, clears: list[np.ndarray], junk: bytes | None) -> bytes:
    """`image` with each block's bitmap replaced; clear sectors hold `junk` (None: unchanged)."""
    out = bytearray(image)
    for start, clear in zip(bat(image), clears, strict=True):
        out[start : start + SECTOR] = np.packbits(~clear).tobytes().ljust(SECTOR, b"\0")
        if junk is not None:
            for sector in np.flatnonzero(clear):
                at = start + SECTOR + int(sector) * SECTOR
                out[at : at + SECTOR] = junk
    return bytes(out)


def zeroed(data: bytes, clears: list[np.ndarray]) -> bytes:
    sectors = np.frombuffer(data, dtype=np.uint8).reshape(-1, SECTOR).copy()
    sectors[np.concatenate(clears)] = 0
    return sectors.tobytes()


KINDS = st.sampled_from(["memory", "stream", "file"])


@contextmanager
def source(image: bytes, kind: str) -> Iterator[IO[bytes]]:
    """`image` in memory, as a forward-only stream, or in a regular (temporary) file."""
    if kind == "file":
        with tempfile.TemporaryFile() as handle:
            handle.write(image)
            handle.seek(0)
            yield handle
    else:
        yield ForwardOnly(io.BytesIO(image)) if kind == "stream" else io.BytesIO(image)


def decrypted_raw(enc: bytes, kind: str) -> bytes:
    out = io.BytesIO()
    with source(enc, kind) as handle:
        decrypt_vhd(handle, out, KEY64, raw=True)
    return out.getvalue()


def decrypted_vhd_view(enc: bytes) -> bytes:
    """Decrypt to a plain VHD and read its virtual disk back."""
    out = io.BytesIO()
    decrypt_vhd(io.BytesIO(enc), out, KEY64)
    view = bytearray(BLOCKS * BLOCK_SIZE)
    with VhdReader(io.BytesIO(out.getvalue())) as reader:
        for index, block, _ in reader.blocks():
            view[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE] = block
    return bytes(view)


examples = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@examples
@given(clears=st.lists(clear_runs(), min_size=BLOCKS, max_size=BLOCKS), kind=KINDS)
def test_partial_source_roundtrip(images: Images, clears: list[np.ndarray], kind: str) -> None:
    """Our encrypt of a partial plain source, then our decrypt: zeros where bits are clear."""
    plain = with_bitmaps(images.plain, clears, junk=None)  # clear sectors still hold data
    enc = io.BytesIO()
    with source(plain, kind) as handle:
        encrypt_vhd(handle, enc, KEY64)
    expected = zeroed(images.data, clears)
    assert decrypted_raw(enc.getvalue(), kind)[:SIZE] == expected[:SIZE]
    verify_vhd(io.BytesIO(plain), io.BytesIO(enc.getvalue()), KEY64)


@examples
@given(
    clears=st.lists(clear_runs(), min_size=BLOCKS, max_size=BLOCKS),
    junk=st.sampled_from([bytes(SECTOR), b"\xa5" * SECTOR, os.urandom(SECTOR)]),
    kind=KINDS,
)
def test_tapdisk_partial_block_decrypts_to_zeros(
    images: Images, clears: list[np.ndarray], junk: bytes, kind: str
) -> None:
    """A tapdisk-style encrypted image whose blocks are written only in part."""
    enc = with_bitmaps(images.encrypted, clears, junk)
    expected = zeroed(images.data, clears)
    assert decrypted_raw(enc, kind)[:SIZE] == expected[:SIZE]
    assert decrypted_vhd_view(enc) == expected
    partial_plain = with_bitmaps(images.plain, clears, junk=None)
    verify_vhd(io.BytesIO(partial_plain), io.BytesIO(enc), KEY64)
    differ = np.flatnonzero(
        np.frombuffer(expected, np.uint8) != np.frombuffer(images.data, np.uint8)
    )
    if differ.size:  # against the full source, verify must name the first zeroed byte
        first = int(differ[0])
        with pytest.raises(VhdVerifyError, match=f"at virtual offset {first}$"):
            verify_vhd(io.BytesIO(images.plain), io.BytesIO(enc), KEY64)
