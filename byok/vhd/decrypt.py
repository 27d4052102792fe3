"""Decrypting encrypted VHDs and verifying them against their source."""

from __future__ import annotations

import hmac
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from byok.vhd.encrypt import EncryptResult, Output, atomic_output, convert_reader, output_name
from byok.vhd.format import BLOCK_SIZE, SECTORS_PER_BLOCK, VhdFormatError
from byok.vhd.keys import VhdKeyError, keyhash, validate_key
from byok.vhd.pipeline import Progress, Transform, run_blocks
from byok.vhd.reader import Block, Holes, Source, VhdReader, is_seekable
from byok.vhd.writer import output_errors
from byok.vhd.xts import SectorXts


class VhdVerifyError(ValueError):
    """The encrypted VHD does not decrypt to the source."""


@dataclass(frozen=True)
class VerifyResult:
    """Summary of a successful verification."""

    source_size: int
    virtual_size: int
    blocks_compared: int


def check_keyhash(reader: VhdReader, key: bytes) -> None:
    """Raise unless the VHD carries a keyhash and it matches `key`."""
    batmap = reader.batmap
    if batmap is None or not batmap.has_keyhash:
        raise VhdFormatError(
            f"offset {reader.header.table_offset}: expected a tdbatmap header with a keyhash "
            f"after the BAT; this VHD is not encrypted by vhd-util"
        )
    if not hmac.compare_digest(keyhash(key, batmap.keyhash_nonce), batmap.keyhash):
        raise VhdKeyError("wrong key: its hash does not match the keyhash stored in the VHD")


def decryptor(key: bytes) -> Transform:
    """Decrypt a block into its output buffer; the sectors it does not store stay zero (they
    hold no ciphertext: decrypting them would turn zeros into garbage). One per thread."""
    xts = SectorXts(key)

    def decrypt(index: int, data: memoryview, out: memoryview, holes: Holes | None) -> None:
        xts.decrypt(data, index * SECTORS_PER_BLOCK, out)
        if holes is not None:
            import numpy as np

            np.frombuffer(out, dtype=np.uint8).reshape(SECTORS_PER_BLOCK, -1)[holes] = 0

    return decrypt


def decrypt_vhd(
    enc: Source,
    out: Output,
    key: bytes,
    progress: Progress | None = None,
    *,
    raw: bool = False,
    overwrite: bool = False,
    spool_dir: str | None = None,
) -> EncryptResult:
    """Decrypt an encrypted VHD (after checking its keyhash).

    Writes a plain tap-style dynamic VHD with the same allocation, or with `raw` the bare
    virtual disk image.
    """
    key = validate_key(key)
    with VhdReader(enc) as reader:
        if reader.block_map is None:
            raise VhdFormatError("offset 0: expected an encrypted (dynamic) VHD, found a fixed one")
        check_keyhash(reader, key)
        if raw:
            return _decrypt_raw(reader, out, key, progress, overwrite)
        return convert_reader(
            reader, out, lambda: decryptor(key), None, progress, overwrite=overwrite,
            spool_dir=spool_dir, keep_zero=True,
        )  # fmt: skip


def _decrypt_raw(
    reader: VhdReader, out: Output, key: bytes, progress: Progress | None, overwrite: bool
) -> EncryptResult:
    size = reader.virtual_size or 0

    def write_to(handle: BinaryIO, name: str) -> int:
        seekable = is_seekable(handle)
        position = 0

        def write(index: int, buf: memoryview) -> None:
            nonlocal position
            start = index * BLOCK_SIZE
            if not seekable and start < position:
                raise VhdFormatError(f"block {index} is out of order for a forward-only output")
            with output_errors(name):
                if seekable:
                    handle.seek(start)
                else:
                    _write_zeros(handle, start - position)
                handle.write(buf[: max(0, min(BLOCK_SIZE, size - start))])
            position = start + BLOCK_SIZE

        written = run_blocks(
            reader, lambda: decryptor(key), write, skip_zero=False, progress=progress
        )
        with output_errors(name):
            if seekable:
                handle.truncate(size)
                position = handle.seek(0, io.SEEK_END)  # truncate() may not extend (BytesIO)
            _write_zeros(handle, size - min(position, size))
        return written

    if isinstance(out, (str, os.PathLike)):
        with atomic_output(out, overwrite) as handle:
            written = write_to(handle, os.fspath(out))
    else:
        written = write_to(out, output_name(out))
    blocks = reader.block_count or 0
    return EncryptResult(size, blocks * BLOCK_SIZE, blocks, written, None)


def _write_zeros(handle: BinaryIO, count: int) -> None:
    zeros = bytes(min(count, BLOCK_SIZE))
    while count > 0:
        handle.write(zeros[: min(count, len(zeros))])
        count -= len(zeros)


def verify_vhd(
    src: Source, enc: Source, key: bytes, progress: Progress | None = None
) -> VerifyResult:
    """Check `enc`'s structure and keyhash, and that it decrypts to `src` byte for byte
    (`progress(bytes_done, bytes_total)` after each block).

    Raises `VhdVerifyError` naming the first differing virtual offset.
    """
    key = validate_key(key)
    decrypt = decryptor(key)
    with VhdReader(src) as source, VhdReader(enc) as encrypted:
        if encrypted.block_map is None:
            raise VhdFormatError("offset 0: expected an encrypted (dynamic) VHD, found a fixed one")
        check_keyhash(encrypted, key)
        compared = 0
        total = encrypted.virtual_size or 0
        theirs = _ascending(encrypted.blocks(), "encrypted VHD")
        mine = _ascending(source.blocks(), "source")
        enc_item = next(theirs, None)
        src_item = next(mine, None)
        while enc_item is not None or src_item is not None:
            at = min(item[0] for item in (enc_item, src_item) if item is not None)
            if src_item is None or (enc_item is not None and enc_item[0] < src_item[0]):
                assert enc_item is not None
                _decrypt_in_place(decrypt, enc_item)
                _same(enc_item[0], enc_item[1], None)
                enc_item = next(theirs, None)
            elif enc_item is None or src_item[0] < enc_item[0]:
                _same(src_item[0], src_item[1], None)
                src_item = next(mine, None)
            else:
                _decrypt_in_place(decrypt, enc_item)
                _same(enc_item[0], enc_item[1], src_item[1])
                enc_item, src_item = next(theirs, None), next(mine, None)
            compared += 1
            if progress is not None:
                progress(min((at + 1) * BLOCK_SIZE, total), total)
        src_size = source.virtual_size or 0
        expected = -(-src_size // BLOCK_SIZE) * BLOCK_SIZE
        if encrypted.virtual_size != expected:
            raise VhdVerifyError(
                f"encrypted virtual size is {encrypted.virtual_size}, expected {expected} "
                f"(source {src_size} rounded up to 2 MiB blocks)"
            )
        return VerifyResult(src_size, expected, compared)


def _decrypt_in_place(decrypt: Transform, block: Block) -> None:
    index, data, holes = block
    decrypt(index, data, data, holes)


def _ascending(items: Iterator[Block], what: str) -> Iterator[Block]:
    last = -1
    for block in items:
        if block[0] <= last:
            raise VhdVerifyError(f"{what}: blocks are not in ascending order; use a seekable file")
        last = block[0]
        yield block


def _same(index: int, got: memoryview, want: memoryview | None) -> None:
    import numpy as np

    a = np.frombuffer(got, dtype=np.uint8)
    if want is None:
        bad = np.flatnonzero(a)
    else:
        bad = np.flatnonzero(a != np.frombuffer(want, dtype=np.uint8))
    if bad.size:
        raise VhdVerifyError(
            f"decrypted data differs from the source at virtual offset "
            f"{index * BLOCK_SIZE + int(bad[0])}"
        )
