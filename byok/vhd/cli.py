"""`byok vhd ...`: encrypt, verify, decrypt, keyhash and info, without Prefect."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

from byok.vhd.decrypt import VhdVerifyError, decrypt_vhd, verify_vhd
from byok.vhd.encrypt import VhdOutputError, encrypt_vhd
from byok.vhd.format import VhdFormatError
from byok.vhd.info import vhd_info
from byok.vhd.keys import VhdKeyError, keyhash, load_key
from byok.vhd.pipeline import Progress

EXIT_ERROR = 2
_EXPECTED = (VhdFormatError, VhdKeyError, VhdOutputError, VhdVerifyError, OSError)
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (removing partial outputs) and exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    for sig in _TERMINATING:  # one unwinding is enough: later signals must not interrupt it
        signal.signal(sig, signal.SIG_IGN)
    raise _Terminated(signum)


@contextmanager
def _terminate_by_unwinding() -> Iterator[None]:
    """While a command runs, SIGTERM/SIGHUP (`timeout`, a closed terminal) raise `_Terminated`
    so that every `finally` runs, as SIGINT does with KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _terminate) for sig in _TERMINATING}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _notes_on_stderr(command: str) -> Iterator[None]:
    """Warnings of the VHD code (e.g. a footer fallback) as `byok vhd CMD: note: ...` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"byok vhd {command}: note: %(message)s"))
    logger = logging.getLogger("byok.vhd")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextmanager
def _progress_bar(label: str) -> Iterator[Progress | None]:
    """A progress bar of the bytes done (rich) on standard error when it is a terminal; None
    (quiet) when it is a pipe or a file."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich import progress as rich  # imported only for a terminal
    from rich.console import Console

    columns = (
        rich.TextColumn(label), rich.BarColumn(), rich.TaskProgressColumn(),
        rich.DownloadColumn(), rich.TransferSpeedColumn(), rich.TimeRemainingColumn(),
    )  # fmt: skip
    with rich.Progress(*columns, console=Console(file=sys.stderr)) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _with_progress(label: str, run: Callable[[Progress | None], Any]) -> Any:
    with _progress_bar(label) as bar:
        return run(bar)


class _ForwardOnly(io.RawIOBase):
    """Standard output seen as a forward-only stream (when absolute seeks would be wrong)."""

    name = "standard output"

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__()
        self._handle = handle

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._handle.write(data)

    def fileno(self) -> int:
        return self._handle.fileno()

    def flush(self) -> None:
        self._handle.flush()


def _streams(args: argparse.Namespace, src: str, dst: str) -> tuple[Any, Any]:
    """`src`/`dst` as given, with '-' replaced by standard input/output."""
    if src == "-" and args.key_file == "-":
        raise VhdKeyError("the key and the source cannot both come from standard input")
    source: Any = src
    if src == "-":  # unbuffered: a buffered stdin blocked in a reader thread aborts the exit
        source = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115
    if dst != "-":
        return source, dst
    out = sys.stdout.buffer
    if out.isatty():
        raise VhdOutputError("refusing to write a binary image to a terminal; redirect it")
    seekable = out.seekable()
    if seekable:  # a regular file: the writers seek to absolute offsets, so it must start empty
        appending = fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_APPEND
        seekable = not appending and out.tell() == 0
    return source, (out if seekable else _ForwardOnly(out))


def _report(dst: str, text: str) -> None:
    """The summary line, on standard error when the image went to standard output."""
    print(text, file=sys.stderr if dst == "-" else sys.stdout)


def _cmd_encrypt(args: argparse.Namespace) -> int:
    src, dst = _streams(args, args.src, args.dst)
    key = load_key(args.key_file)
    result = _with_progress(
        "encrypt",
        lambda bar: encrypt_vhd(src, dst, key, bar, spool_dir=args.spool_dir, force=args.force),
    )
    if args.dst == "-":
        sys.stdout.buffer.flush()
    _report(
        args.dst,
        f"wrote {args.dst}: {result.virtual_size} bytes virtual, "
        f"{result.blocks_written}/{result.blocks_total} blocks allocated, "
        f"keyhash {result.keyhash.hex()}",
    )
    return 0


def _cmd_decrypt(args: argparse.Namespace) -> int:
    src, dst = _streams(args, args.enc, args.out)
    key = load_key(args.key_file)
    result = _with_progress(
        "decrypt",
        lambda bar: decrypt_vhd(src, dst, key, bar, raw=args.raw, spool_dir=args.spool_dir),
    )
    if args.out == "-":
        sys.stdout.buffer.flush()
    kind = "raw image" if args.raw else "VHD"
    _report(args.out, f"wrote {kind} {args.out}: {result.virtual_size} bytes virtual")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    key = load_key(args.key_file)
    result = _with_progress("verify", lambda bar: verify_vhd(args.src, args.enc, key, bar))
    print(
        f"OK: {args.enc} decrypts to {args.src} ({result.source_size} bytes, "
        f"{result.blocks_compared} blocks compared); keyhash matches"
    )
    return 0


def _cmd_keyhash(args: argparse.Namespace) -> int:
    print(keyhash(load_key(args.key_file)).hex())
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = vhd_info(args.file)
    if args.json:
        print(json.dumps(info.as_dict(), indent=2))
        return 0
    rows = [
        ("type", info.disk_type),
        ("virtual size", f"{info.virtual_size} bytes ({info.virtual_size / 2**30:.2f} GiB)"),
        ("file size", f"{info.file_size} bytes" if info.file_size is not None else "unknown"),
        ("block size", f"{info.block_size} bytes"),
        ("blocks", f"{info.blocks_allocated} allocated of {info.blocks_total}"),
        ("creator", f"{info.creator_app!r} {info.creator_version}"),
        ("keyhash", info.keyhash or "none (not encrypted by vhd-util)"),
    ]
    for name, value in rows:
        print(f"{name + ':':14s}{value}")
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        command = args.vhd_command
        try:
            with _terminate_by_unwinding(), _notes_on_stderr(command):
                code = func(args)
                sys.stdout.flush()  # a reader that stopped early (`| head`) shows here
                return code
        except BrokenPipeError:  # the text report's reader stopped: quiet, as `seq | head`
            code = 128 + signal.SIGPIPE
            _silence_stdout()
        except _EXPECTED as exc:
            message = (
                str(exc)
                if not isinstance(exc, OSError) or not exc.filename
                else (f"{exc.filename}: {exc.strerror}")
            )
            code = EXIT_ERROR
            print(f"byok vhd {command}: error: {message}", file=sys.stderr)
            if isinstance(exc.__cause__ or exc, BrokenPipeError):
                _silence_stdout()
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
            print(f"byok vhd {command}: interrupted", file=sys.stderr)
        except _Terminated as exc:
            code = 128 + exc.signum
            print(f"byok vhd {command}: {signal.Signals(exc.signum).name}: stopped, partial "
                  f"output removed", file=sys.stderr)  # fmt: skip
        return code

    return run


def _silence_stdout() -> None:
    """After standard output broke, let nothing more reach it (Python would fail again
    flushing it at exit)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def register(subparsers: Any) -> None:
    """Add the `vhd` sub-command and its sub-commands to a top-level `byok` parser."""
    vhd = subparsers.add_parser(
        "vhd", help="encrypt VHDs like IBM's vhd-util (AES-XTS, keyhash in the VHD)",
        description=__doc__,
    )  # fmt: skip
    commands = vhd.add_subparsers(dest="vhd_command", required=True)
    key_help = "file holding the raw 32- or 64-byte key ('-' reads standard input)"

    enc = commands.add_parser("encrypt", help="encrypt SRC (fixed or dynamic VHD) into DST")
    enc.add_argument("src", metavar="SRC", help="a path, or '-' for standard input")
    enc.add_argument(
        "dst", metavar="DST", help="new file (refused if it exists), or '-' for standard output"
    )
    enc.add_argument("--key-file", required=True, help=key_help)
    enc.add_argument("--spool-dir", help="temporary directory when the output is a stream")
    enc.add_argument(
        "--force", action="store_true",
        help="encrypt SRC even if it already carries a keyhash (a second encryption)",
    )  # fmt: skip
    enc.set_defaults(func=_guarded(_cmd_encrypt))

    ver = commands.add_parser("verify", help="check ENC's keyhash and that it decrypts to SRC")
    ver.add_argument("src", metavar="SRC")
    ver.add_argument("enc", metavar="ENC")
    ver.add_argument("--key-file", required=True, help=key_help)
    ver.set_defaults(func=_guarded(_cmd_verify))

    dec = commands.add_parser("decrypt", help="decrypt ENC into OUT (a plain VHD, or --raw)")
    dec.add_argument("enc", metavar="ENC", help="a path, or '-' for standard input")
    dec.add_argument(
        "out", metavar="OUT", help="new file (refused if it exists), or '-' for standard output"
    )
    dec.add_argument("--key-file", required=True, help=key_help)
    dec.add_argument("--spool-dir", help="temporary directory when the output is a stream")
    dec.add_argument("--raw", action="store_true", help="write the raw virtual disk instead")
    dec.set_defaults(func=_guarded(_cmd_decrypt))

    kh = commands.add_parser("keyhash", help="print the key hash (as `vhd-util key -C` does)")
    kh.add_argument("--key-file", required=True, help=key_help)
    kh.set_defaults(func=_guarded(_cmd_keyhash))

    info = commands.add_parser("info", help="describe a VHD")
    info.add_argument("file", metavar="FILE")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_guarded(_cmd_info))


def main(argv: Sequence[str] | None = None) -> int:
    """Run `byok vhd ...` on its own (used by `python -m byok.vhd`)."""
    parser = argparse.ArgumentParser(prog="byok")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["vhd", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
