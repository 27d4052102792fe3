"""The qemu-img wrapper: QEMU's PBKDF2 benchmark that measured 0 ms of CPU is tried again
(seen on CI), any other qemu-img failure is reported at once with qemu-img's own message."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from byok.errors import OperationFailed
from byok.ibm_vpc_qemu import encrypt_to_qcow2, image_info

PASSPHRASE = b"correct horse battery staple 0123"


def _flaky_qemu_img(bin_dir: Path, failures: int, message: str) -> Path:
    """A `qemu-img` first on PATH that fails `failures` times with `message`, then runs the
    real one; it counts its calls in `calls`."""
    real = shutil.which("qemu-img")
    if real is None:
        pytest.skip("qemu-img (Debian package qemu-utils) is not installed")
    calls = bin_dir / "calls"
    script = bin_dir / "qemu-img"
    script.write_text(
        "#!/bin/sh\n"
        f'echo x >> "{calls}"\n'
        f'if [ "$(wc -l < "{calls}")" -le {failures} ]; then\n'
        f'  echo "qemu-img: {message}" >&2; exit 1\nfi\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    return calls


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(4096) + bytes(1024 * 1024))
    return path


def test_a_zero_ms_benchmark_round_is_tried_again(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _flaky_qemu_img(
        tmp_path, 2, "error while converting qcow2: Unable to get accurate CPU usage"
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    target = tmp_path / "disk.qcow2"
    encrypt_to_qcow2(raw, target, PASSPHRASE, "raw", iter_time_ms=10)
    assert len(calls.read_text().splitlines()) == 3
    assert image_info(target)["format"] == "qcow2"


def test_other_failures_are_reported_at_once(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _flaky_qemu_img(tmp_path, 9, "Could not create 'disk.qcow2': No space left on device")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(OperationFailed, match="No space left on device"):
        encrypt_to_qcow2(raw, tmp_path / "disk.qcow2", PASSPHRASE, "raw", iter_time_ms=10)
    assert len(calls.read_text().splitlines()) == 1
