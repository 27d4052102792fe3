"""Encrypting (and, symmetrically, decrypting) whole VHDs into tap-style dynamic VHDs.

How the output layout is decided (the BAT precedes the data in a dynamic VHD):
- seekable output (a path or a seekable file): one pass; records are written as they come,
  the metadata last. All-zero blocks are left unallocated.
- forward-only output, seekable source: a first pass finds the non-zero blocks, a second pass
  encrypts them behind metadata written up front (the source is read twice, nothing spooled).
- forward-only output, dynamic source stream: the plan is the source's BAT (blocks in file
  order); allocated blocks are kept even when all zero, as vhd-util does. Nothing is spooled.
- forward-only output, fixed source stream (size known only at its end): encrypted records
  are spooled to a temporary file (`spool_dir`), then metadata, spool and footer are emitted.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from byok.vhd.format import BLOCK_SIZE, SECTORS_PER_BLOCK
from byok.vhd.keys import keyhash, validate_key
from byok.vhd.pipeline import Progress, is_zero, run_blocks
from byok.vhd.reader import Source, VhdReader, is_seekable
from byok.vhd.writer import PlannedSink, SeekableSink, SpoolSink, fsync_path_dir
from byok.vhd.xts import SectorXts

Output = str | os.PathLike[str] | BinaryIO
Transform = Callable[[int, memoryview], None]


class VhdOutputError(ValueError):
    """The output cannot be written (for example it exists and overwriting was not asked)."""


@dataclass(frozen=True)
class EncryptResult:
    """What an encryption (or decryption) wrote."""

    source_size: int
    virtual_size: int
    blocks_total: int
    blocks_written: int
    keyhash: bytes | None


def encrypt_vhd(
    src: Source,
    dst: Output,
    key: bytes,
    progress: Progress | None = None,
    *,
    overwrite: bool = False,
    spool_dir: str | None = None,
) -> EncryptResult:
    """Encrypt a fixed or dynamic VHD into the tap-style dynamic VHD `vhd-util copy -k` writes.

    `src`/`dst` are paths or binary file objects (forward-only streams included). A path `dst`
    is written to a temporary file in its directory, fsync'd, then renamed; an existing `dst`
    is refused unless `overwrite`.
    """
    key = validate_key(key)
    xts = SectorXts(key)

    def encrypt(index: int, buf: memoryview) -> None:
        xts.encrypt(buf, index * SECTORS_PER_BLOCK, buf)

    digest = (bytes(32), keyhash(key))
    return _convert(src, dst, encrypt, digest, progress, overwrite=overwrite, spool_dir=spool_dir)


def _convert(
    src: Source,
    dst: Output,
    transform: Transform,
    digest: tuple[bytes, bytes] | None,
    progress: Progress | None,
    *,
    overwrite: bool,
    spool_dir: str | None,
    keep_zero: bool = False,
) -> EncryptResult:
    with VhdReader(src) as reader:
        return convert_reader(reader, dst, transform, digest, progress, overwrite=overwrite,
                              spool_dir=spool_dir, keep_zero=keep_zero)  # fmt: skip


def convert_reader(
    reader: VhdReader,
    dst: Output,
    transform: Transform,
    digest: tuple[bytes, bytes] | None,
    progress: Progress | None,
    *,
    overwrite: bool,
    spool_dir: str | None,
    keep_zero: bool,
) -> EncryptResult:
    """Transform every block of an opened source into a tap-style dynamic VHD at `dst`."""
    if isinstance(dst, (str, os.PathLike)):
        with atomic_output(dst, overwrite) as handle:
            return _convert_to(reader, handle, transform, digest, progress, spool_dir, keep_zero)
    return _convert_to(reader, dst, transform, digest, progress, spool_dir, keep_zero)


def _convert_to(
    reader: VhdReader,
    out: BinaryIO,
    transform: Transform,
    digest: tuple[bytes, bytes] | None,
    progress: Progress | None,
    spool_dir: str | None,
    keep_zero: bool,
) -> EncryptResult:
    blocks = reader.block_count
    if blocks is not None and is_seekable(out):
        sink: SeekableSink | PlannedSink | SpoolSink = SeekableSink(out, blocks, digest)
        skip_zero = not keep_zero
    elif blocks is not None and reader.seekable:
        plan = [i for i, buf in reader.blocks(itertools.repeat(memoryview(bytearray(BLOCK_SIZE))))
                if keep_zero or not is_zero(buf)]  # fmt: skip
        sink = PlannedSink(out, blocks, plan, digest)
        skip_zero = not keep_zero
    elif blocks is not None:
        sink = PlannedSink(out, blocks, reader.stream_order(), digest)
        skip_zero = False
    else:
        sink = SpoolSink(out, digest, spool_dir)
        skip_zero = not keep_zero
    written = run_blocks(reader, transform, sink.write, skip_zero=skip_zero, progress=progress)
    blocks = reader.block_count or 0
    if isinstance(sink, SpoolSink):
        sink.blocks = blocks
    sink.close()
    return EncryptResult(
        source_size=reader.virtual_size or 0,
        virtual_size=blocks * BLOCK_SIZE,
        blocks_total=blocks,
        blocks_written=written,
        keyhash=digest[1] if digest else None,
    )


class atomic_output:
    """Context manager: a temporary file next to `path`, fsync'd and renamed on success."""

    def __init__(self, path: str | os.PathLike[str], overwrite: bool) -> None:
        self.path = os.fspath(path)
        self.overwrite = overwrite
        if not overwrite and os.path.lexists(self.path):
            raise VhdOutputError(f"{self.path} exists; refusing to overwrite it")
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(self.path)}.", suffix=".part"
        )
        self.handle: BinaryIO = os.fdopen(fd, "w+b", buffering=0)

    def __enter__(self) -> BinaryIO:
        return self.handle

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self.handle.flush()
                os.fsync(self.handle.fileno())
            self.handle.close()
            if exc_type is not None:
                return
            if self.overwrite:
                os.replace(self.tmp, self.path)
            else:
                try:
                    os.link(self.tmp, self.path)  # fails atomically if the path appeared
                except FileExistsError:
                    raise VhdOutputError(f"{self.path} exists; refusing to overwrite it") from None
                os.unlink(self.tmp)
            fsync_path_dir(self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
