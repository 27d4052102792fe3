"""The block pipeline: zero detection and ordered output with parallel workers."""

from __future__ import annotations

import io
import os
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byok.vhd import decrypt_vhd, encrypt_vhd, xts
from byok.vhd.format import BLOCK_SIZE
from byok.vhd.reader import VhdReader
from byok.vhd.xts import is_zero

from .conftest import KEY64, MakeVhd


@pytest.mark.parametrize("extension", [True, False], ids=["c", "numpy"])
@settings(deadline=None, max_examples=50)
@given(position=st.integers(0, BLOCK_SIZE - 1), value=st.integers(1, 255))
def test_one_nonzero_byte_anywhere_makes_a_data_block(
    extension: bool, position: int, value: int
) -> None:
    if extension and xts._xts is None:
        pytest.skip("C extension not built")
    with patch.object(xts, "_xts", xts._xts if extension else None):
        block = bytearray(BLOCK_SIZE)
        assert is_zero(memoryview(block))
        block[position] = value
        assert not is_zero(memoryview(block))
        assert not is_zero(memoryview(block)[position:])


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


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_whole_blocks_of_a_file_are_mapped_not_copied(make_vhd: MakeVhd, subformat: str) -> None:
    """Read-only mapped views for whole stored blocks; a buffer for the tail and in memory."""
    data = os.urandom(2 * BLOCK_SIZE + 4096)
    src = make_vhd(data, subformat)
    with VhdReader(src) as reader:
        blocks = [
            (index, view.readonly, bytes(view)) for index, view, _ in reader.blocks(mapped=True)
        ]
    assert [(index, mapped) for index, mapped, _ in blocks] == [(0, True), (1, True), (2, False)]
    assert b"".join(block for *_, block in blocks)[: len(data)] == data
    with VhdReader(io.BytesIO(src.read_bytes())) as reader:
        assert not any(view.readonly for _, view, _ in reader.blocks(mapped=True))
