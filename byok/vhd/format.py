"""VHD on-disk structures: footer, dynamic header, BAT, tdbatmap header with keyhash.

All integers are big-endian (Microsoft VHD spec 1.0, blktap `tdbatmap` extension).
Parsing raises `VhdFormatError` naming the file offset and what was expected there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SECTOR = 512
BLOCK_SIZE = 2 * 1024 * 1024
SECTORS_PER_BLOCK = BLOCK_SIZE // SECTOR
DATA_ALIGN = 4096
MAX_VIRTUAL_SIZE = 2040 * 1024**3  # the VHD limit vhd-util and qemu enforce

FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
BATMAP_COOKIE = b"tdbatmap"
UNUSED = 0xFFFFFFFF
NO_OFFSET = 0xFFFFFFFFFFFFFFFF

TYPE_FIXED = 2
TYPE_DYNAMIC = 3
TYPE_DIFFERENCING = 4
TYPE_NAMES = {TYPE_FIXED: "fixed", TYPE_DYNAMIC: "dynamic", TYPE_DIFFERENCING: "differencing"}

FOOTER_FEATURES = 0x00000002
FOOTER_VERSION = 0x00010000
HEADER_VERSION = 0x00010000
BATMAP_VERSION = 0x00010002
TAP_CREATOR_APP = b"tap\0"
TAP_CREATOR_VERSION = 0x00010003
HEADER_SIZE = 1024
BAT_OFFSET = 3 * SECTOR
KEYHASH_COOKIE = 1
KEYHASH_NONCE_SIZE = 32
KEYHASH_SIZE = 32

_FOOTER = struct.Struct(">8sIIQI4sIIQQIII16sBB")
_HEADER = struct.Struct(">8sQQIIII16sII")
_BATMAP = struct.Struct(">8sQIIIB")


class VhdFormatError(ValueError):
    """A VHD structure is missing, malformed or unsupported (the message names the offset)."""


def checksum(data: bytes | bytearray | memoryview) -> int:
    """One's complement of the byte sum, as a u32 (the checksum field must be zeroed first)."""
    return ~sum(memoryview(data).cast("B")) & 0xFFFFFFFF


def chs_geometry(size: int) -> int:
    """CHS geometry word for a disk of `size` bytes (VHD spec appendix)."""
    sectors = min(size // SECTOR, 65535 * 16 * 255)
    if sectors >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = sectors // spt
    else:
        spt = 17
        cth = sectors // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = sectors // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = sectors // spt
    return ((cth // heads) << 16) | (heads << 8) | spt


def _expect_cookie(data: bytes, cookie: bytes, offset: int, what: str) -> None:
    if data[: len(cookie)] != cookie:
        raise VhdFormatError(
            f"offset {offset}: expected {what} cookie {cookie.decode()!r}, "
            f"found {bytes(data[: len(cookie)])!r}"
        )


def _expect_checksum(data: bytes, stored: int, at: int, offset: int, what: str) -> None:
    zeroed = bytearray(data)
    zeroed[at : at + 4] = bytes(4)
    expected = checksum(zeroed)
    if stored != expected:
        raise VhdFormatError(
            f"offset {offset}: {what} checksum is {stored:#010x}, expected {expected:#010x}"
        )


@dataclass(frozen=True)
class Footer:
    """The 512-byte VHD footer (also mirrored at offset 0 of dynamic disks)."""

    disk_type: int
    current_size: int
    original_size: int
    data_offset: int = NO_OFFSET
    timestamp: int = 0
    creator_app: bytes = TAP_CREATOR_APP
    creator_version: int = TAP_CREATOR_VERSION
    creator_os: int = 0
    geometry: int = 0
    uuid: bytes = bytes(16)
    saved_state: int = 0
    hidden: int = 0
    features: int = FOOTER_FEATURES
    version: int = FOOTER_VERSION

    def pack(self) -> bytes:
        """Serialise with a fresh checksum."""
        raw = bytearray(SECTOR)
        _FOOTER.pack_into(
            raw, 0, FOOTER_COOKIE, self.features, self.version, self.data_offset,
            self.timestamp, self.creator_app, self.creator_version, self.creator_os,
            self.original_size, self.current_size, self.geometry, self.disk_type, 0,
            self.uuid, self.saved_state, self.hidden,
        )  # fmt: skip
        struct.pack_into(">I", raw, 64, checksum(raw))
        return bytes(raw)

    @classmethod
    def parse(cls, data: bytes, offset: int) -> Footer:
        """Parse and validate a footer read from file offset `offset`."""
        if len(data) < SECTOR:
            raise VhdFormatError(
                f"offset {offset}: expected a 512-byte VHD footer, found {len(data)} bytes"
            )
        data = bytes(data[:SECTOR])
        _expect_cookie(data, FOOTER_COOKIE, offset, "footer")
        (_, features, version, data_offset, timestamp, app, app_ver, app_os, orig, cur,
         geometry, disk_type, stored, uuid, saved, hidden) = _FOOTER.unpack_from(data)  # fmt: skip
        _expect_checksum(data, stored, 64, offset, "footer")
        if disk_type not in TYPE_NAMES:
            raise VhdFormatError(
                f"offset {offset + 60}: expected disk type 2 (fixed), 3 (dynamic) "
                f"or 4 (differencing), found {disk_type}"
            )
        return cls(disk_type, cur, orig, data_offset, timestamp, app, app_ver, app_os,
                   geometry, uuid, saved, hidden, features, version)  # fmt: skip

    @property
    def type_name(self) -> str:
        """'fixed', 'dynamic' or 'differencing'."""
        return TYPE_NAMES[self.disk_type]


@dataclass(frozen=True)
class DynamicHeader:
    """The 1024-byte dynamic disk header (`cxsparse`)."""

    table_offset: int
    max_table_entries: int
    block_size: int = BLOCK_SIZE
    data_offset: int = NO_OFFSET
    version: int = HEADER_VERSION

    def pack(self) -> bytes:
        """Serialise with a fresh checksum (parent fields zero)."""
        raw = bytearray(HEADER_SIZE)
        _HEADER.pack_into(
            raw, 0, HEADER_COOKIE, self.data_offset, self.table_offset, self.version,
            self.max_table_entries, self.block_size, 0, bytes(16), 0, 0,
        )  # fmt: skip
        struct.pack_into(">I", raw, 36, checksum(raw))
        return bytes(raw)

    @classmethod
    def parse(cls, data: bytes, offset: int) -> DynamicHeader:
        """Parse and validate a dynamic header read from file offset `offset`."""
        if len(data) < HEADER_SIZE:
            raise VhdFormatError(
                f"offset {offset}: expected a 1024-byte dynamic disk header, "
                f"found {len(data)} bytes"
            )
        data = bytes(data[:HEADER_SIZE])
        _expect_cookie(data, HEADER_COOKIE, offset, "dynamic header")
        _, data_off, table_off, version, entries, block_size, stored, *_ = _HEADER.unpack_from(data)
        _expect_checksum(data, stored, 36, offset, "dynamic header")
        if block_size < SECTOR or block_size & (block_size - 1):
            raise VhdFormatError(
                f"offset {offset + 32}: expected a power-of-two block size >= 512, "
                f"found {block_size}"
            )
        if table_off % SECTOR:
            raise VhdFormatError(
                f"offset {offset + 16}: expected a sector-aligned BAT offset, found {table_off}"
            )
        return cls(table_off, entries, block_size, data_off, version)


@dataclass(frozen=True)
class BatmapHeader:
    """The blktap `tdbatmap` header that carries the keyhash after the BAT."""

    batmap_offset: int
    batmap_sectors: int
    checksum: int
    version: int = BATMAP_VERSION
    marker: int = 0
    keyhash_cookie: int = 0
    keyhash_nonce: bytes = field(default=bytes(KEYHASH_NONCE_SIZE))
    keyhash: bytes = field(default=bytes(KEYHASH_SIZE))

    def pack(self) -> bytes:
        """Serialise to one 512-byte sector."""
        raw = bytearray(SECTOR)
        _BATMAP.pack_into(
            raw, 0, BATMAP_COOKIE, self.batmap_offset, self.batmap_sectors, self.version,
            self.checksum, self.marker,
        )  # fmt: skip
        raw[29] = self.keyhash_cookie
        raw[30:62] = self.keyhash_nonce
        raw[62:94] = self.keyhash
        return bytes(raw)

    @classmethod
    def parse(cls, data: bytes, offset: int) -> BatmapHeader:
        """Parse a batmap header read from file offset `offset`."""
        data = bytes(data[:SECTOR])
        _expect_cookie(data, BATMAP_COOKIE, offset, "batmap header")
        _, map_off, sectors, version, stored, marker = _BATMAP.unpack_from(data)
        return cls(map_off, sectors, stored, version, marker, data[29], data[30:62], data[62:94])

    @property
    def has_keyhash(self) -> bool:
        """True when the keyhash cookie byte is set."""
        return self.keyhash_cookie == KEYHASH_COOKIE

    def without_keyhash(self) -> BatmapHeader:
        """The same header with the keyhash cleared (for decrypted copies)."""
        return replace(self, keyhash_cookie=0, keyhash_nonce=bytes(32), keyhash=bytes(32))


def batmap_checksum(batmap: bytes | bytearray | memoryview) -> int:
    """Batmap checksum (version 1.2): NOT of the unsigned byte sum, as u32."""
    return checksum(batmap)


def padded(size: int, unit: int = SECTOR) -> int:
    """`size` rounded up to a multiple of `unit`."""
    return -(-size // unit) * unit


def parse_bat(data: bytes, entries: int, offset: int) -> np.ndarray:
    """BAT entries (u32 sector offsets, `UNUSED` for holes) as a numpy array."""
    need = entries * 4
    if len(data) < need:
        raise VhdFormatError(
            f"offset {offset}: expected a BAT of {entries} entries ({need} bytes), "
            f"found {len(data)} bytes"
        )
    import numpy as np

    return np.frombuffer(data, dtype=">u4", count=entries).astype(np.uint32)
