"""Writing the tap-style dynamic VHD that `vhd-util copy -k` produces.

Layout: footer copy @0, dynamic header @512, BAT @1536 (padded to a sector), `tdbatmap` header
(with the keyhash) and batmap, then block records (one all-ones bitmap sector + 2 MiB data,
placed so that the data is 4 KiB aligned) in the order they are written, then the footer.

Three sinks share that record format:
- `SeekableSink` writes records as they come and the metadata last (seekable outputs);
- `PlannedSink` writes the metadata first, from an allocation plan known up front
  (forward-only outputs);
- `SpoolSink` writes records to a temporary file and everything at the end (forward-only
  outputs whose allocation is only known at the end).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from byok.vhd.format import (
    BAT_OFFSET,
    BLOCK_SIZE,
    DATA_ALIGN,
    KEYHASH_COOKIE,
    SECTOR,
    TYPE_DYNAMIC,
    UNUSED,
    BatmapHeader,
    DynamicHeader,
    Footer,
    batmap_checksum,
    chs_geometry,
    padded,
)

if TYPE_CHECKING:
    import numpy as np

BITMAP = b"\xff" * SECTOR
RECORD_STRIDE = padded(SECTOR + BLOCK_SIZE, DATA_ALIGN)
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z


class VhdOutputError(ValueError):
    """The output cannot be written (it exists, its directory is missing, the disk is full...);
    the message names the file."""


@contextlib.contextmanager
def output_errors(name: str) -> Iterator[None]:
    """Re-raise an unnamed `OSError` (disk full, broken pipe...) as a `VhdOutputError` naming
    the file being written."""
    try:
        yield
    except OSError as exc:
        raise VhdOutputError(f"{name}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class TapLayout:
    """Offsets of a tap-style dynamic VHD holding `blocks` 2 MiB blocks."""

    blocks: int

    @property
    def virtual_size(self) -> int:
        """Virtual size: whole 2 MiB blocks."""
        return self.blocks * BLOCK_SIZE

    @property
    def bat_bytes(self) -> int:
        """BAT size, padded to a sector."""
        return padded(self.blocks * 4)

    @property
    def batmap_header_offset(self) -> int:
        """Offset of the `tdbatmap` header, right after the padded BAT."""
        return BAT_OFFSET + self.bat_bytes

    @property
    def batmap_offset(self) -> int:
        """Offset of the batmap (header + 512)."""
        return self.batmap_header_offset + SECTOR

    @property
    def batmap_bytes(self) -> int:
        """Batmap size (one bit per block), padded to a sector."""
        return padded(-(-self.blocks // 8))

    @property
    def metadata_end(self) -> int:
        """End of the batmap."""
        return self.batmap_offset + self.batmap_bytes

    @property
    def first_record(self) -> int:
        """Offset of the first block bitmap: its data starts 4 KiB aligned."""
        return padded(self.metadata_end + SECTOR, DATA_ALIGN) - SECTOR

    def record_offset(self, slot: int) -> int:
        """File offset of the `slot`-th block record written."""
        return self.first_record + slot * RECORD_STRIDE

    def footer_offset(self, records: int) -> int:
        """Where the footer goes after `records` block records."""
        if not records:
            return self.first_record
        return self.record_offset(records - 1) + SECTOR + BLOCK_SIZE

    def metadata(
        self, bat: np.ndarray, footer: Footer, keyhash: tuple[bytes, bytes] | None
    ) -> bytes:
        """Footer copy, header, BAT, batmap header and batmap, up to the first record."""
        out = bytearray(self.first_record)
        out[0:SECTOR] = footer.pack()
        out[SECTOR:BAT_OFFSET] = DynamicHeader(BAT_OFFSET, self.blocks).pack()
        out[BAT_OFFSET : BAT_OFFSET + self.bat_bytes] = b"\xff" * self.bat_bytes
        out[BAT_OFFSET : BAT_OFFSET + 4 * self.blocks] = bat.astype(">u4").tobytes()
        batmap = bytearray(self.batmap_bytes)
        import numpy as np

        packed = np.packbits(bat != UNUSED).tobytes()
        batmap[: len(packed)] = packed
        nonce, digest = keyhash if keyhash else (bytes(32), bytes(32))
        header = BatmapHeader(
            self.batmap_offset,
            self.batmap_bytes // SECTOR,
            batmap_checksum(batmap),
            keyhash_cookie=KEYHASH_COOKIE if keyhash else 0,
            keyhash_nonce=nonce,
            keyhash=digest,
        )
        out[self.batmap_header_offset : self.batmap_offset] = header.pack()
        out[self.batmap_offset : self.metadata_end] = batmap
        return bytes(out)


def new_footer(virtual_size: int) -> Footer:
    """A fresh tap-style dynamic-disk footer for `virtual_size` bytes."""
    return Footer(
        disk_type=TYPE_DYNAMIC,
        current_size=virtual_size,
        original_size=virtual_size,
        data_offset=SECTOR,
        timestamp=max(0, int(time.time()) - VHD_EPOCH) & 0xFFFFFFFF,
        geometry=chs_geometry(virtual_size),
        uuid=uuid.uuid4().bytes,
    )


class _Sink:
    """Common state: the layout grows as blocks arrive; records are numbered by slot."""

    def __init__(self, handle: BinaryIO, keyhash: tuple[bytes, bytes] | None) -> None:
        self.handle = handle
        self.keyhash = keyhash
        self.slots: list[int] = []  # block index of each written record

    def _bat(self, blocks: int) -> np.ndarray:
        import numpy as np

        bat = np.full(blocks, UNUSED, dtype=np.uint32)
        layout = TapLayout(blocks)
        for slot, index in enumerate(self.slots):
            bat[index] = layout.record_offset(slot) // SECTOR
        return bat

    def _finish(self, blocks: int) -> tuple[bytes, bytes]:
        layout = TapLayout(blocks)
        footer = new_footer(layout.virtual_size)
        return layout.metadata(self._bat(blocks), footer, self.keyhash), footer.pack()


_GAP = bytes(RECORD_STRIDE - SECTOR - BLOCK_SIZE)


def _write_record(handle: BinaryIO, data: memoryview | bytes, first: bool) -> None:
    """Write one record; records after the first are preceded by the alignment gap."""
    if not first:
        handle.write(_GAP)
    handle.write(BITMAP)
    handle.write(data)


class SeekableSink(_Sink):
    """Records first (after room reserved for the metadata), metadata and footer last."""

    def __init__(self, handle: BinaryIO, blocks: int, keyhash: tuple[bytes, bytes] | None) -> None:
        super().__init__(handle, keyhash)
        self.layout = TapLayout(blocks)
        handle.seek(self.layout.first_record)

    def write(self, index: int, data: memoryview | bytes) -> None:
        """Append the record of block `index`."""
        self.slots.append(index)
        _write_record(self.handle, data, len(self.slots) == 1)

    def close(self) -> None:
        """Write footer and metadata."""
        metadata, footer = self._finish(self.layout.blocks)
        end = self.layout.footer_offset(len(self.slots))
        self.handle.seek(end)
        self.handle.write(footer)
        self.handle.truncate(end + SECTOR)
        self.handle.seek(0)
        self.handle.write(metadata)


class PlannedSink(_Sink):
    """Metadata first from the planned block order; `write` must follow that order."""

    def __init__(
        self, handle: BinaryIO, blocks: int, plan: list[int], keyhash: tuple[bytes, bytes] | None
    ) -> None:
        super().__init__(handle, keyhash)
        self.blocks = blocks
        self.slots = list(plan)
        self._next = 0
        metadata, self._footer = self._finish(blocks)
        handle.write(metadata)

    def write(self, index: int, data: memoryview | bytes) -> None:
        """Write the record of block `index` (the next one in the plan)."""
        if self._next >= len(self.slots) or self.slots[self._next] != index:
            raise RuntimeError(f"block {index} arrived out of the planned order")
        self._next += 1
        _write_record(self.handle, data, self._next == 1)

    def close(self) -> None:
        """Write the footer after checking every planned block arrived."""
        if self._next != len(self.slots):
            raise RuntimeError(f"only {self._next} of {len(self.slots)} planned blocks arrived")
        self.handle.write(self._footer)


class SpoolSink(_Sink):
    """Records go to a temporary spool file; metadata, spool and footer are written at close."""

    def __init__(
        self, handle: BinaryIO, keyhash: tuple[bytes, bytes] | None, spool_dir: str | None = None
    ) -> None:
        super().__init__(handle, keyhash)
        self._name = f"spool directory {spool_dir or tempfile.gettempdir()}"
        with output_errors(self._name):
            self._spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
        self.blocks: int | None = None

    def write(self, index: int, data: memoryview | bytes) -> None:
        """Spool the record of block `index`."""
        self.slots.append(index)
        with output_errors(self._name):
            _write_record(self._spool, data, len(self.slots) == 1)

    def close(self) -> None:
        """Emit everything; `blocks` must have been set once the source size is known."""
        assert self.blocks is not None
        metadata, footer = self._finish(self.blocks)
        self.handle.write(metadata)
        _copy_spool(self._spool, self.handle)
        self._spool.close()
        self.handle.write(footer)


def _copy_spool(spool: BinaryIO, handle: BinaryIO) -> None:
    """Append the whole spool file to `handle`: in the kernel (sendfile) when `handle` has a
    file descriptor that takes it, else through a buffer."""
    size, done = spool.seek(0, os.SEEK_END), 0
    try:
        out = handle.fileno()
        handle.flush()
    except (AttributeError, OSError, ValueError):
        out = -1
    while out >= 0 and done < size:
        try:
            sent = os.sendfile(out, spool.fileno(), done, size - done)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or done:
                raise
            break  # this kind of output does not take sendfile
        if not sent:
            break
        done += sent
    spool.seek(done)
    shutil.copyfileobj(spool, handle, 4 << 20)


def fsync_path_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory holding `path` so a rename is durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
