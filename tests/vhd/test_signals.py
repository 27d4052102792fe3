"""No exit path leaves the hidden `.NAME.XXXX.part` output behind: signals sent to a real
`byok vhd encrypt` process while it writes (the source is a pipe that stops mid-image)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import KEY64, MakeVhd

MIB = 1 << 20
REPO = Path(__file__).parents[2]
# how the process is stopped -> the exit status expected
CASES = {
    "SIGTERM": 128 + signal.SIGTERM,
    "SIGHUP": 128 + signal.SIGHUP,
    "SIGINT": 128 + signal.SIGINT,
    "timeout": 124,  # timeout(1) sends SIGTERM and reports 124
}


def _start(how: str, work: Path, key: Path) -> subprocess.Popen[bytes]:
    out = work / "out"
    out.mkdir()
    command = [sys.executable, "-m", "byok.vhd", "encrypt", "-", str(out / "enc.vhd"),
               "--key-file", str(key)]  # fmt: skip
    if how == "timeout":
        command = ["timeout", "15", *command]
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True
    )


def _wait_for_part(directory: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".part") for p in directory.iterdir()):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no .part output appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_signals_remove_the_partial_output(
    make_vhd: MakeVhd, tmp_path: Path, qemu_img: str
) -> None:
    key = tmp_path / "dek.bin"
    key.write_bytes(KEY64)
    image = make_vhd(os.urandom(8 * MIB), "fixed").read_bytes()
    runs = {}
    for how in CASES:  # all at once: the suite waits for the slowest, not the sum
        work = tmp_path / how
        work.mkdir()
        proc = _start(how, work, key)
        assert proc.stdin is not None
        proc.stdin.write(image[: 3 * MIB])  # then nothing: the encryptor waits mid-image
        proc.stdin.flush()
        runs[how] = (work / "out", proc)
    for how, (out, proc) in runs.items():
        _wait_for_part(out, proc)
        if how != "timeout":
            os.kill(proc.pid, getattr(signal, how))
    for how, (out, proc) in runs.items():
        status = proc.wait(timeout=60)
        assert proc.stderr is not None and proc.stdin is not None
        stderr = proc.stderr.read().decode()
        proc.stdin.close()
        assert list(out.iterdir()) == [], how
        assert status == CASES[how], (how, stderr)
        assert "Traceback" not in stderr and "Fatal" not in stderr, stderr
        expected = "interrupted" if how == "SIGINT" else "stopped, partial output removed"
        assert expected in stderr, stderr
