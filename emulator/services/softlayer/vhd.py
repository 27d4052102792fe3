"""The emulator's own reading of the VHDs an import is given, written from the VHD spec 1.0
and vhd-util's tdbatmap keyhash (FACTS.md §3) independently of the product's `byok.vhd`, so a
bug there cannot hide in both: the footer (at the end), a dynamic disk's header and BAT, and
the keyhash of the `tdbatmap` header that follows the BAT. Also makes the seed's fixed VHD."""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from typing import BinaryIO

SECTOR = 512
FOOTER_COOKIE, HEADER_COOKIE, BATMAP_COOKIE = b"conectix", b"cxsparse", b"tdbatmap"
DISK_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z


class NotAVhd(ValueError):
    """The bytes are not a VHD the import understands."""


@dataclass(frozen=True)
class Disk:
    """What the import checks of a VHD."""

    disk_type: str
    creator_app: str
    virtual_size: int
    keyhash: bytes | None  # the 32-byte hash of the tdbatmap header (tap-style VHDs only)
    nonce: bytes | None


def _checksum(data: bytes) -> int:
    """One's complement of the byte sum (the checksum field zeroed by the caller)."""
    return ~sum(data) & 0xFFFFFFFF


def _read(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise NotAVhd(f"truncated: {size} bytes wanted at offset {offset}")
    return data


def _checked(block: bytes, at: int, what: str) -> None:
    stored = struct.unpack_from(">I", block, at)[0]
    zeroed = block[:at] + b"\0\0\0\0" + block[at + 4 :]
    if stored != _checksum(zeroed):
        raise NotAVhd(f"bad {what} checksum")


def read_disk(handle: BinaryIO) -> Disk:
    """Read a VHD's footer, and for a dynamic disk its header, BAT end and tdbatmap."""
    size = handle.seek(0, 2)
    if size < SECTOR or size % SECTOR:
        raise NotAVhd(f"{size} bytes is not a whole number of sectors")
    footer = _read(handle, size - SECTOR, SECTOR)
    if footer[:8] != FOOTER_COOKIE:
        raise NotAVhd("no 'conectix' footer in the last sector")
    _checked(footer, 64, "footer")
    data_offset, current_size = (
        struct.unpack_from(">Q", footer, 16)[0],
        struct.unpack_from(">Q", footer, 48)[0],
    )
    kind = DISK_TYPES.get(struct.unpack_from(">I", footer, 60)[0], "unknown")
    creator = footer[28:32].rstrip(b"\0").decode("ascii", "replace")
    if kind != "dynamic":
        return Disk(kind, creator, current_size, None, None)
    header = _read(handle, data_offset, 2 * SECTOR)
    if header[:8] != HEADER_COOKIE:
        raise NotAVhd("no 'cxsparse' dynamic header")
    _checked(header, 36, "dynamic header")
    bat_offset = struct.unpack_from(">Q", header, 16)[0]
    entries = struct.unpack_from(">I", header, 28)[0]
    batmap_at = bat_offset + -(-entries * 4 // SECTOR) * SECTOR
    if batmap_at + SECTOR > size - SECTOR:
        return Disk(kind, creator, current_size, None, None)
    batmap = _read(handle, batmap_at, SECTOR)
    if batmap[:8] != BATMAP_COOKIE or batmap[29] != 1:
        return Disk(kind, creator, current_size, None, None)
    return Disk(kind, creator, current_size, batmap[62:94], batmap[30:62])


def key_matches(disk: Disk, dek: bytes) -> bool:
    """Whether the DEK is the one the disk's keyhash names: SHA-256(nonce || key)."""
    assert disk.keyhash is not None and disk.nonce is not None
    return hashlib.sha256(disk.nonce + dek).digest() == disk.keyhash


def fixed_vhd(data: bytes, creator: bytes = b"byok") -> bytes:
    """`data` (whole sectors) as a fixed VHD: the data then a footer."""
    size = len(data)
    cylinders, heads, sectors = _geometry(size // SECTOR)
    footer = bytearray(SECTOR)
    struct.pack_into(">8sIIQI4sI4sQQHBBI", footer, 0, FOOTER_COOKIE, 2, 0x00010000,
                     0xFFFFFFFFFFFFFFFF, 0, creator.ljust(4, b"\0"), 0x00010000, b"Wi2k", size,
                     size, cylinders, heads, sectors, 2)  # fmt: skip
    footer[68:84] = uuid.uuid4().bytes
    struct.pack_into(">I", footer, 64, _checksum(bytes(footer)))
    return data + bytes(footer)


def _geometry(total: int) -> tuple[int, int, int]:
    """CHS geometry of a disk of `total` sectors (the VHD spec's algorithm, appendix)."""
    total = min(total, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        sectors, heads = 255, 16
        cylinder_heads = total // sectors
    else:
        sectors = 17
        cylinder_heads = total // sectors
        heads = max(4, (cylinder_heads + 1023) // 1024)
        if cylinder_heads >= heads * 1024 or heads > 16:
            sectors, heads = 31, 16
            cylinder_heads = total // sectors
        if cylinder_heads >= heads * 1024:
            sectors, heads = 63, 16
            cylinder_heads = total // sectors
    return cylinder_heads // heads, heads, sectors
