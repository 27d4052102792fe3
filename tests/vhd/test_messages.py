"""`byok vhd` messages name the path and the problem; structure refusals reach the CLI."""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from byok.vhd.cli import main

from .conftest import KEY64, MakeVhd

MIB = 1 << 20
REPO = Path(__file__).parents[2]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "dek.bin"
    path.write_bytes(KEY64)
    return path


def _run(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "byok.vhd", *args], stderr=subprocess.PIPE, cwd=REPO, **kwargs
    )


def _small_files() -> None:
    """In the child: writes past 1 MiB fail with EFBIG instead of killing it (SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MIB, MIB))


@pytest.mark.slow
def test_output_failures_name_the_file(make_vhd: MakeVhd, tmp_path: Path, key_file: Path) -> None:
    """Missing spool dir, disk full, file too large, broken pipe: one line naming the file."""
    fixed = make_vhd(os.urandom(4 * MIB), "fixed")
    key = ["--key-file", str(key_file)]
    big = tmp_path / "big.vhd"
    spool = ["--spool-dir", str(tmp_path / "nope")]
    with open("/dev/full", "wb") as full:
        runs = {
            "spool": _run("encrypt", "-", "-", *key, *spool, stdin=subprocess.PIPE),
            "full": _run("encrypt", str(fixed), "-", *key, stdout=full),
            "too-large": _run("encrypt", str(fixed), str(big), *key, preexec_fn=_small_files),
            "pipe": _run("encrypt", str(fixed), "-", *key, stdout=subprocess.PIPE),
        }
        pipe = runs["pipe"]
        assert pipe.stdout is not None
        pipe.stdout.read(1000)
        pipe.stdout.close()  # the consumer goes away: broken pipe
        errors = {}
        for name, run in runs.items():
            feed = fixed.read_bytes() if name == "spool" else None  # a pipe: spooling needed
            _, err = run.communicate(feed, timeout=120)
            errors[name] = err.decode()
            assert run.returncode == 2, (name, errors[name])
            assert errors[name].count("\n") == 1 and "Traceback" not in errors[name], errors[name]
    assert f"spool directory {tmp_path / 'nope'}: No such file or directory" in errors["spool"]
    assert "error: standard output: No space left on device" in errors["full"]
    assert f"error: {big}: File too large" in errors["too-large"]
    assert "error: standard output: Broken pipe" in errors["pipe"]
    assert sorted(p.name for p in tmp_path.iterdir() if "big" in p.name) == []


def test_missing_output_directory(
    make_vhd: MakeVhd, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_vhd(os.urandom(MIB), "dynamic")
    dst = tmp_path / "missing" / "enc.vhd"
    assert main(["encrypt", str(src), str(dst), "--key-file", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert f"{dst}: cannot create a file in {dst.parent}: No such file or directory" in err
    assert ".part" not in err


def test_long_key_file_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "big.key"
    key.write_bytes(os.urandom(1024))
    assert main(["keyhash", "--key-file", str(key)]) == 2
    err = capsys.readouterr().err
    assert f"key file {key} holds 1024 bytes; expected exactly 32 or 64 raw bytes" in err
    key.write_bytes(KEY64 + b"\n")
    assert main(["keyhash", "--key-file", str(key)]) == 2
    assert f"key file {key}: key is 65 bytes: it ends with a trailing newline" in (
        capsys.readouterr().err
    )


def test_structure_refusals_in_the_cli(
    make_vhd: MakeVhd, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_vhd(os.urandom(3 * MIB), "dynamic")
    enc, twice = tmp_path / "enc.vhd", tmp_path / "twice.vhd"
    key = ["--key-file", str(key_file)]
    assert main(["encrypt", str(src), str(enc), *key]) == 0
    capsys.readouterr()
    assert main(["encrypt", str(enc), str(twice), *key]) == 2
    assert "already carries a keyhash" in capsys.readouterr().err and not twice.exists()
    assert main(["encrypt", str(enc), str(twice), *key, "--force"]) == 0

    raw = bytearray(enc.read_bytes())
    raw[-512:-504] = b"XXXXXXXX"  # a bad trailing footer: the copy at offset 0 is used
    enc.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(["verify", str(src), str(enc), *key]) == 0
    err = capsys.readouterr().err
    assert err.startswith("byok vhd verify: note: the trailing footer is unusable (offset ")
    assert "using the footer copy at offset 0" in err

    cut = tmp_path / "cut.vhd"
    cut.write_bytes(bytes(raw[: 1 * MIB]))  # the BAT points past the end of the file
    assert main(["info", str(cut)]) == 2
    assert "past the data" in capsys.readouterr().err
    struct.pack_into(">I", raw, 1536, 0)
    enc.write_bytes(bytes(raw))
    assert main(["info", str(enc)]) == 2
    assert "BAT entry 0 points at sector 0" in capsys.readouterr().err
