"""`byok vhd ...` sub-commands: outputs, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byok.vhd.cli import main, register

from .conftest import KEY64, MakeVhd

MIB = 1 << 20


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "dek.bin"
    path.write_bytes(KEY64)
    return path


def test_register_adds_vhd_command() -> None:
    parser = argparse.ArgumentParser(prog="byok")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["vhd", "keyhash", "--key-file", "k"])
    assert callable(args.func)


def test_encrypt_verify_decrypt_info(
    make_vhd: MakeVhd, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = os.urandom(5 * MIB)
    src = make_vhd(data, "fixed")
    enc, out = tmp_path / "enc.vhd", tmp_path / "out.raw"
    assert main(["encrypt", str(src), str(enc), "--key-file", str(key_file)]) == 0
    assert main(["verify", str(src), str(enc), "--key-file", str(key_file)]) == 0
    assert "keyhash matches" in capsys.readouterr().out
    assert main(["decrypt", str(enc), str(out), "--raw", "--key-file", str(key_file)]) == 0
    assert out.read_bytes()[: len(data)] == data
    assert main(["info", str(enc)]) == 0
    text = capsys.readouterr().out
    assert "dynamic" in text and "3 allocated of 3" in text
    assert hashlib.sha256(bytes(32) + KEY64).hexdigest() in text
    assert main(["info", "--json", str(src)]) == 0
    assert '"keyhash": null' in capsys.readouterr().out


def test_keyhash_from_stdin(key_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "byok.vhd", "keyhash", "--key-file", "-"],
        input=KEY64, capture_output=True, check=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert result.stdout.decode().strip() == hashlib.sha256(bytes(32) + KEY64).hexdigest()


def test_errors_are_one_line_exit_2(
    make_vhd: MakeVhd, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_vhd(os.urandom(MIB), "dynamic")
    bad_key = tmp_path / "bad.key"
    bad_key.write_bytes(KEY64 + b"\n")
    assert main(["encrypt", str(src), str(tmp_path / "x.vhd"), "--key-file", str(bad_key)]) == 2
    err = capsys.readouterr().err
    assert "trailing newline" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["encrypt", str(src), str(src), "--key-file", str(key_file)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.vhd")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert main(["verify", str(src), str(src), "--key-file", str(key_file)]) == 2
    assert "keyhash" in capsys.readouterr().err


def _byok_vhd(*args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(  # type: ignore[call-overload]
        [sys.executable, "-m", "byok.vhd", *args],
        stderr=subprocess.PIPE, cwd=Path(__file__).parents[2], **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_encrypt_and_decrypt_through_pipes(
    make_vhd: MakeVhd, tmp_path: Path, key_file: Path, kind: str
) -> None:
    """'-' as SRC/DST: pipe in, pipe out (forward-only), and stdout redirected to a file."""
    data = os.urandom(3 * MIB + 4096)
    src = make_vhd(data, kind)
    enc = _byok_vhd("encrypt", "-", "-", "--key-file", str(key_file), input=src.read_bytes())
    assert enc.returncode == 0, enc.stderr
    assert b"wrote -" in enc.stderr and not enc.stdout.startswith(b"wrote")
    piped = tmp_path / "piped.vhd"
    piped.write_bytes(enc.stdout)
    assert main(["verify", str(src), str(piped), "--key-file", str(key_file)]) == 0

    redirected = tmp_path / "redirected.vhd"
    with open(redirected, "wb") as out:
        run = _byok_vhd("encrypt", str(src), "-", "--key-file", str(key_file), stdout=out)
    assert run.returncode == 0, run.stderr
    assert main(["verify", str(src), str(redirected), "--key-file", str(key_file)]) == 0

    dec = _byok_vhd("decrypt", "-", "-", "--raw", "--key-file", str(key_file), input=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout[: len(data)] == data and not dec.stdout[len(data) :].strip(b"\0")


def test_key_and_source_cannot_both_be_stdin(make_vhd: MakeVhd, tmp_path: Path) -> None:
    src = make_vhd(os.urandom(MIB), "dynamic")
    run = _byok_vhd("encrypt", "-", str(tmp_path / "x.vhd"), "--key-file", "-",
                    input=src.read_bytes())  # fmt: skip
    assert run.returncode == 2
    assert b"cannot both come from standard input" in run.stderr


def _commands(src: Path, tmp_path: Path, key_file: Path) -> list[list[str]]:
    enc, out = tmp_path / "enc.vhd", tmp_path / "out.vhd"
    key = ["--key-file", str(key_file)]
    return [
        ["encrypt", str(src), str(enc), *key],
        ["verify", str(src), str(enc), *key],
        ["decrypt", str(enc), str(out), *key],
    ]


def _on_terminal(argv: list[str]) -> bytes:
    """Run `byok vhd ARGV` with standard error on a pseudo-terminal; what the terminal got."""
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "byok.vhd", *argv], stdout=subprocess.DEVNULL, stderr=slave,
        cwd=Path(__file__).parents[2], env=env,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the process closed the terminal
        while chunk := os.read(master, 65536):
            seen += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0, seen
    return seen


def test_progress_bar_on_a_terminal(make_vhd: MakeVhd, tmp_path: Path, key_file: Path) -> None:
    src = make_vhd(os.urandom(4 * MIB), "dynamic")  # two whole blocks: 4.2 MB for each command
    for argv in _commands(src, tmp_path, key_file):
        seen = _on_terminal(argv)
        assert argv[0].encode() in seen and b"100%" in seen and b"4.2/4.2 MB" in seen, seen


def test_no_progress_when_stderr_is_a_pipe(
    make_vhd: MakeVhd, tmp_path: Path, key_file: Path
) -> None:
    src = make_vhd(os.urandom(5 * MIB), "dynamic")
    for argv in _commands(src, tmp_path, key_file):
        done = subprocess.run(
            [sys.executable, "-m", "byok.vhd", *argv], capture_output=True, check=True,
            cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert done.stderr == b"" and done.stdout.count(b"\n") == 1, done


def test_a_reader_that_stops_early_is_no_error(make_vhd: MakeVhd, key_file: Path) -> None:
    """`byok vhd info FILE | head -1`: the reader gone, the command ends quietly, exit 141
    (128 + SIGPIPE) as `seq 100000 | head -1` does."""
    src = make_vhd(os.urandom(MIB), "dynamic")
    for argv in (["info", str(src)], ["keyhash", "--key-file", str(key_file)]):
        read, write = os.pipe()
        os.close(read)  # the reader already stopped
        with os.fdopen(write, "wb") as stdout:
            done = subprocess.run(
                [sys.executable, "-m", "byok.vhd", *argv], stdout=stdout, stderr=subprocess.PIPE,
                cwd=Path(__file__).parents[2], check=False,
            )  # fmt: skip
        assert (done.returncode, done.stderr) == (141, b""), done
