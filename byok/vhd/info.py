"""Describing a VHD: type, sizes, block size, allocation and keyhash."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from byok.vhd.format import BLOCK_SIZE, UNUSED
from byok.vhd.reader import Source, VhdReader


@dataclass(frozen=True)
class VhdInfo:
    """What `vhd_info` reports."""

    disk_type: str
    virtual_size: int
    file_size: int | None
    block_size: int
    blocks_total: int
    blocks_allocated: int
    creator_app: str
    creator_version: str
    keyhash: str | None
    keyhash_nonce: str | None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON output)."""
        return asdict(self)


def vhd_info(path: Source) -> VhdInfo:
    """Describe a fixed or dynamic VHD (path or seekable binary file)."""
    with VhdReader(path) as reader:
        footer = reader.footer
        if footer is None:
            # fixed VHD on a stream: the footer is at the end
            for _ in reader.blocks():
                pass
            footer = reader.footer
        assert footer is not None
        bmap = reader.block_map
        if bmap is None:
            block_size = BLOCK_SIZE
            total = reader.block_count or 0
            allocated = total
        else:
            block_size = bmap.block_size
            total = len(bmap.bat)
            allocated = int((bmap.bat != UNUSED).sum())
        batmap = reader.batmap
        has_hash = batmap is not None and batmap.has_keyhash
        version = footer.creator_version
        return VhdInfo(
            disk_type=footer.type_name,
            virtual_size=footer.current_size,
            file_size=reader.file_size,
            block_size=block_size,
            blocks_total=total,
            blocks_allocated=allocated,
            creator_app=footer.creator_app.rstrip(b"\0").decode("latin-1"),
            creator_version=f"{version >> 16}.{version & 0xFFFF}",
            keyhash=batmap.keyhash.hex() if has_hash and batmap else None,
            keyhash_nonce=batmap.keyhash_nonce.hex() if has_hash and batmap else None,
        )
