"""Fixtures for the VHD tests: keys and qemu-img made VHDs."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

KEY64 = bytes(range(64))
KEY32 = bytes(range(32))


@pytest.fixture
def qemu_img() -> str:
    """Path of qemu-img; the test is skipped when it is not installed."""
    path = shutil.which("qemu-img")
    if path is None:
        pytest.skip("qemu-img (Debian package qemu-utils) is not installed")
    return path


MakeVhd = Callable[[bytes, str], Path]


@pytest.fixture
def make_vhd(tmp_path: Path, qemu_img: str) -> MakeVhd:
    """Build a VHD with qemu-img from raw bytes: make_vhd(data, "dynamic" | "fixed")."""
    counter = iter(range(1000))

    def make(data: bytes, subformat: str) -> Path:
        n = next(counter)
        raw = tmp_path / f"src{n}.raw"
        raw.write_bytes(data)
        out = tmp_path / f"src{n}-{subformat}.vhd"
        subprocess.run(
            [qemu_img, "convert", "-q", "-f", "raw", "-O", "vpc", "-o",
             f"subformat={subformat},force_size=on", str(raw), str(out)],
            check=True,
        )  # fmt: skip
        return out

    return make


class ForwardOnly(io.RawIOBase):
    """A non-seekable wrapper, like a pipe or an HTTP body."""

    def __init__(self, inner: io.BufferedIOBase | io.RawIOBase) -> None:
        self.inner = inner

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        return self.inner.readinto(buf)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.inner.write(data)
