"""A source that shrinks while it is encrypted (another process truncates it) fails with a
one-line error naming it, not SIGBUS, and leaves no output: whole blocks are read through
memory mappings, and reading past the new end of a mapped file raises SIGBUS."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byok.vhd.xts import BUS_ERRORS, is_zero

from .conftest import KEY64, MakeVhd

MIB = 1 << 20
REPO = Path(__file__).parents[2]

# `byok vhd encrypt` on the first CORES cores whose progress callback (called in order after
# each block) truncates the source to 1 MiB after the first block; faulthandler on, as under
# pytest, must not report it
TRUNCATING_CLI = """
import faulthandler, os, sys
faulthandler.enable()
from byok.vhd import cli
cores, src = int(sys.argv[1]), sys.argv[2]
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
def truncate_after_first(done, total):
    if done <= 2 << 20:
        os.truncate(src, 1 << 20)
cli._with_progress = lambda label, run: run(truncate_after_first)
sys.exit(cli.main(sys.argv[3:]))
"""

pytestmark = pytest.mark.skipif(not BUS_ERRORS, reason="blocks are mapped only with _xts")


@pytest.mark.parametrize("cores", [1, 2], ids=["one-core", "threads"])
@pytest.mark.parametrize("subformat", ["fixed", "dynamic"])
def test_a_source_truncated_meanwhile_fails_cleanly(
    make_vhd: MakeVhd, tmp_path: Path, subformat: str, cores: int
) -> None:
    src = make_vhd(os.urandom(32 * MIB), subformat)
    key = tmp_path / "dek.bin"
    key.write_bytes(KEY64)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-c", TRUNCATING_CLI, str(cores), str(src), "encrypt", str(src),
               str(out / "enc.vhd"), "--key-file", str(key)]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert os.path.getsize(src) == MIB  # the hook ran
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"byok vhd encrypt: error: {src}: the file shrank to {MIB} bytes while being read "
        f"(truncated by another process?)\n"
    )
    assert list(out.iterdir()) == []


def test_the_accelerator_raises_bus_error_reading_past_a_new_end(tmp_path: Path) -> None:
    from byok.vhd import _xts  # type: ignore[attr-defined]

    path = tmp_path / "data"
    path.write_bytes(os.urandom(4 * MIB))
    with open(path, "r+b") as handle:
        view = memoryview(mmap.mmap(handle.fileno(), 4 * MIB, prot=mmap.PROT_READ))
        handle.truncate(MIB)
        out = bytearray(4 * MIB)
        for impl in ("vaes", "aesni", "openssl"):
            try:
                xts = _xts.Xts(KEY64, impl)
            except ValueError:  # not on this CPU
                continue
            xts.encrypt(view[:MIB], out, 0)  # what is left reads fine
            with pytest.raises(_xts.BusError):
                xts.encrypt(view, out, 0)
        with pytest.raises(_xts.BusError):
            is_zero(view[2 * MIB :])
        view.release()
