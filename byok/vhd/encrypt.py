"""Encrypting (and, symmetrically, decrypting) whole VHDs into tap-style dynamic VHDs.

One layout whatever the path: records in source order, all-zero blocks left unallocated when
encrypting (decrypting keeps the encrypted image's allocation). How it is written (the BAT
precedes the data in a dynamic VHD):
- seekable output (a path or a seekable file): one pass; records are written as they come,
  the metadata last.
- forward-only output, seekable source: a first pass finds the blocks to write, a second pass
  transforms them behind metadata written up front (the source is read twice, nothing spooled).
- forward-only output, source stream: which blocks are all zero is known only at the end, so
  the records are spooled to a temporary file (`spool_dir`), then metadata, spool and footer
  are emitted (decrypting a dynamic stream needs no spool: its allocation is the source's).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from byok.vhd.format import BLOCK_SIZE, SECTORS_PER_BLOCK, VhdFormatError
from byok.vhd.keys import keyhash, validate_key
from byok.vhd.pipeline import Progress, Transform, run_blocks
from byok.vhd.reader import Holes, Source, VhdReader, is_seekable
from byok.vhd.writer import (
    PlannedSink,
    SeekableSink,
    SpoolSink,
    VhdOutputError,
    fsync_path_dir,
    output_errors,
)
from byok.vhd.xts import SectorXts, is_zero

Output = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class EncryptResult:
    """What an encryption (or decryption) wrote."""

    source_size: int
    virtual_size: int
    blocks_total: int
    blocks_written: int
    keyhash: bytes | None


def encryptor(key: bytes) -> Transform:
    """Encrypt a block into its output buffer (one per thread: it is not thread-safe)."""
    xts = SectorXts(key)

    def encrypt(index: int, data: memoryview, out: memoryview, holes: Holes | None) -> None:
        xts.encrypt(data, index * SECTORS_PER_BLOCK, out)

    return encrypt


def encrypt_vhd(
    src: Source,
    dst: Output,
    key: bytes,
    progress: Progress | None = None,
    *,
    overwrite: bool = False,
    spool_dir: str | None = None,
    force: bool = False,
) -> EncryptResult:
    """Encrypt a fixed or dynamic VHD into the tap-style dynamic VHD `vhd-util copy -k` writes.

    `src`/`dst` are paths or binary file objects (forward-only streams included). A path `dst`
    is written to a temporary file in its directory, fsync'd, then renamed; an existing `dst`
    is refused unless `overwrite`. A source that already carries a keyhash is refused unless
    `force`.
    """
    key = validate_key(key)
    digest = (bytes(32), keyhash(key))
    with VhdReader(src) as reader:
        if reader.batmap is not None and reader.batmap.has_keyhash and not force:
            raise VhdFormatError(
                f"offset {reader.header.table_offset}: the source already carries a keyhash "
                f"after its BAT: it is an encrypted VHD, and encrypting it again would need both "
                f"keys to read it; decrypt it first, or force a second encryption (--force)"
            )
        return convert_reader(
            reader, dst, lambda: encryptor(key), digest, progress, overwrite=overwrite,
            spool_dir=spool_dir, keep_zero=False,
        )  # fmt: skip


def convert_reader(
    reader: VhdReader,
    dst: Output,
    new_transform: Callable[[], Transform],
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
            return _convert_to(
                reader, handle, os.fspath(dst), new_transform, digest, progress, spool_dir,
                keep_zero,
            )  # fmt: skip
    name = output_name(dst)
    return _convert_to(reader, dst, name, new_transform, digest, progress, spool_dir, keep_zero)


def _convert_to(
    reader: VhdReader,
    out: BinaryIO,
    name: str,
    new_transform: Callable[[], Transform],
    digest: tuple[bytes, bytes] | None,
    progress: Progress | None,
    spool_dir: str | None,
    keep_zero: bool,
) -> EncryptResult:
    blocks = reader.block_count
    sink: SeekableSink | PlannedSink | SpoolSink
    with output_errors(name):
        if blocks is not None and is_seekable(out):
            sink = SeekableSink(out, blocks, digest)
        elif blocks is not None and reader.seekable:
            scratch = itertools.repeat(memoryview(bytearray(BLOCK_SIZE)))
            blocks_read = reader.blocks(scratch, mapped=True)
            with reader.shrink_errors():
                plan = [i for i, data, _ in blocks_read if keep_zero or not is_zero(data)]
            sink = PlannedSink(out, blocks, plan, digest)
        elif blocks is not None and keep_zero:
            sink = PlannedSink(out, blocks, reader.stream_order(), digest)
        else:  # which blocks are all zero is known only at the end: spool
            sink = SpoolSink(out, digest, spool_dir)

    def write(index: int, data: memoryview) -> None:
        with output_errors(name):
            sink.write(index, data)

    written = run_blocks(reader, new_transform, write, skip_zero=not keep_zero, progress=progress)
    blocks = reader.block_count or 0
    with output_errors(name):
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


def output_name(handle: object) -> str:
    """How messages name an output file object ("standard output" for stdout)."""
    name = getattr(handle, "name", None)
    if name in ("<stdout>", 1):
        return "standard output"
    return name if isinstance(name, str) else "the output"


class atomic_output:
    """Context manager: a temporary file next to `path`, fsync'd and renamed on success.

    The temporary file is removed on every exit path, including a signal handler that raises:
    signals are held while it is created, so it is known before any handler can run.
    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool) -> None:
        self.path = os.fspath(path)
        self.overwrite = overwrite
        self.tmp: str | None = None
        self.handle: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if not self.overwrite and os.path.lexists(self.path):
            raise VhdOutputError(f"{self.path} exists; refusing to overwrite it")
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            with _signals_held():
                fd, self.tmp = tempfile.mkstemp(
                    dir=directory, prefix=f".{os.path.basename(self.path)}.", suffix=".part"
                )
                self.handle = os.fdopen(fd, "w+b", buffering=0)
        except OSError as exc:
            self._discard()
            raise VhdOutputError(
                f"{self.path}: cannot create a file in {directory}: {exc.strerror}"
            ) from None
        except BaseException:
            self._discard()
            raise
        return self.handle

    def __exit__(self, exc_type: object, *rest: object) -> None:
        assert self.handle is not None and self.tmp is not None
        try:
            if exc_type is not None:
                return
            with output_errors(self.path):
                self.handle.flush()
                os.fsync(self.handle.fileno())
                self.handle.close()
            if self.overwrite:
                os.replace(self.tmp, self.path)
            else:
                try:
                    os.link(self.tmp, self.path)  # fails atomically if the path appeared
                except FileExistsError:
                    raise VhdOutputError(f"{self.path} exists; refusing to overwrite it") from None
            fsync_path_dir(self.path)
        finally:
            self._discard()

    def _discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP; their Python handlers run when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
