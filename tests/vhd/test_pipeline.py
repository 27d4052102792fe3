"""The block pipeline: zero detection and ordered output with parallel workers."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from byok.vhd import decrypt_vhd, encrypt_vhd
from byok.vhd.format import BLOCK_SIZE
from byok.vhd.pipeline import is_zero

from .conftest import KEY64, MakeVhd


@settings(deadline=None, max_examples=50)
@given(position=st.integers(0, BLOCK_SIZE - 1), value=st.integers(1, 255))
def test_one_nonzero_byte_anywhere_makes_a_data_block(position: int, value: int) -> None:
    block = bytearray(BLOCK_SIZE)
    assert is_zero(memoryview(block))
    block[position] = value
    assert not is_zero(memoryview(block))


def test_zero_blocks_dropped_in_order_whatever_their_first_sector(
    make_vhd: MakeVhd, tmp_path: Path
) -> None:
    late = bytearray(BLOCK_SIZE)
    late[-1] = 7  # zero first sector, data at the very end: must be kept
    data = bytes(BLOCK_SIZE) + late + os.urandom(BLOCK_SIZE) + bytes(BLOCK_SIZE) + late
    src = make_vhd(data, "fixed")
    enc, out = tmp_path / "enc.vhd", tmp_path / "out.raw"
    assert encrypt_vhd(src, enc, KEY64).blocks_written == 3
    decrypt_vhd(enc, out, KEY64, raw=True)
    assert out.read_bytes() == data
