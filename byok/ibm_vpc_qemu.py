"""qcow2 + LUKS images for IBM Cloud VPC, made and checked by the real `qemu-img`
(https://cloud.ibm.com/docs/vpc?topic=vpc-create-encrypted-custom-image: QEMU >= 2.12,
`encrypt.format=luks` with a secret object). The passphrase reaches qemu-img only through a
0600 file in a private directory, removed on every exit path: never on its command line or in
its environment. No Prefect import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from byok.errors import OperationFailed, VerificationFailed

SECRET_ID = "sec0"


@contextmanager
def secret_file(passphrase: bytes) -> Iterator[Path]:
    """A 0600 file (in a 0700 directory) holding the passphrase, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="byok-luks-") as directory:
        path = Path(directory) / "passphrase"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, passphrase)
        finally:
            os.close(fd)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


# QEMU times its PBKDF2 benchmark in thread CPU time and gives up when its first round
# (2^15 iterations) measured 0 ms (crypto/pbkdf.c, qcrypto_pbkdf2_count_iters: "Unable to get
# accurate CPU usage"). With tick-based CPU accounting (CONFIG_TICK_CPU_ACCOUNTING) the thread's
# CPU time moves in whole ticks (4 ms at HZ=250, measured here with getrusage(RUSAGE_THREAD)),
# and that round takes ~3 ms: 16 of 40 converts failed so on this machine, 5 tries in a row on
# a loaded CI machine. Each try is independent and a failed one costs a few ms, so try often.
_CPU_CLOCK_TOO_COARSE = "Unable to get accurate CPU usage"
_ATTEMPTS = 100


def _run(args: list[str], what: str) -> str:
    for _ in range(_ATTEMPTS):
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, env=_env())
        if done.returncode == 0:
            return done.stdout
        if _CPU_CLOCK_TOO_COARSE not in done.stderr:
            break
    raise OperationFailed(f"qemu-img {what}", done.stderr.strip() or "failed")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}


def image_info(path: Path) -> dict[str, object]:
    """`qemu-img info` (format probed): format, virtual-size, format-specific…"""
    result: dict[str, object] = json.loads(_run(["info", "--output=json", str(path)], "info"))
    return result


@dataclass(frozen=True)
class Described:
    """What qemu-img reads in a source image."""

    format: str
    virtual_size: int
    allocated: int  # bytes allocated on disk


# A fixed VHD has its footer only at the end, where qemu-img's probe does not look (it finds
# `raw`): the footer's cookie says it is one (the VHD specification, "Hard Disk Footer Format").
VHD_COOKIE = b"conectix"
VHD_FOOTER = 512


def describe(path: Path) -> Described:
    """The source's format (a fixed VHD told from raw by its footer) and sizes."""
    info = image_info(path)
    fmt = str(info["format"])
    if fmt == "raw" and path.stat().st_size >= VHD_FOOTER:
        with path.open("rb") as handle:
            handle.seek(-VHD_FOOTER, os.SEEK_END)
            if handle.read(len(VHD_COOKIE)) == VHD_COOKIE:
                fmt = "vpc"
    if fmt == "vpc":
        opened = ["info", "--output=json", "--image-opts", source_opts(path, fmt)]
        info = json.loads(_run(opened, "info"))
    return Described(fmt, int(str(info["virtual-size"])), int(str(info.get("actual-size", 0))))


PROBE_HEAD, PROBE_TAIL = 4 << 20, 1 << 20


def describe_parts(size: int, head: bytes, tail: bytes) -> Described:
    """Describe an image of `size` bytes from its first and last bytes alone (a sparse copy
    holding only them: where qemu-img reads the headers, footers and tables of the formats it
    probes, for images it wrote)."""
    with tempfile.TemporaryDirectory(prefix="byok-vpc-probe-") as scratch:
        path = Path(scratch) / "probe"
        with path.open("wb") as handle:
            handle.write(head)
            handle.truncate(size)
            handle.seek(size - len(tail))
            handle.write(tail)
        found = describe(path)
    return Described(found.format, found.virtual_size, size)


def source_opts(path: Path, fmt: str) -> str:
    """The source as qemu `--image-opts`; a VHD sized by its footer's current size, not by
    its CHS geometry (which qemu-img otherwise uses for VHDs from most creators and which can
    cut the disk's last sectors off: qemu's block/vpc.c, `force_size_calc`)."""
    opts = f"driver={fmt},file.filename={_opt(path)}"
    return opts + ",force_size_calc=current_size" if fmt == "vpc" else opts


def encrypt_to_qcow2(
    source: Path, target: Path, passphrase: bytes, source_format: str, iter_time_ms: int
) -> None:
    """Convert `source` to a qcow2 encrypted with LUKS under `passphrase`."""
    with secret_file(passphrase) as secret:
        _run(
            [
                "convert",
                "-O",
                "qcow2",
                "--object",
                f"secret,id={SECRET_ID},file={secret}",
                "-o",
                f"encrypt.format=luks,encrypt.key-secret={SECRET_ID},"
                f"encrypt.iter-time={iter_time_ms}",
                "--image-opts",
                source_opts(source, source_format),
                str(target),
            ],
            "convert",
        )


def verify_encrypted(source: Path, target: Path, passphrase: bytes, source_format: str) -> None:
    """`qemu-img check` the encrypted qcow2 and `qemu-img compare` it with the source
    (VerificationFailed when they differ or the passphrase does not open it)."""
    details = image_info(target)
    specific = details.get("format-specific")
    data = specific.get("data", {}) if isinstance(specific, dict) else {}
    if details.get("format") != "qcow2" or (data.get("encrypt") or {}).get("format") != "luks":
        raise VerificationFailed(target.name, "not a LUKS-encrypted qcow2")
    opened = f"driver=qcow2,file.filename={_opt(target)},encrypt.key-secret={SECRET_ID}"
    with secret_file(passphrase) as secret:
        secret_object = f"secret,id={SECRET_ID},file={secret}"
        try:
            _run(["check", "--object", secret_object, "--image-opts", opened], "check")
            _run(
                [
                    "compare",
                    "--object",
                    secret_object,
                    "--image-opts",
                    source_opts(source, source_format),
                    opened,
                ],
                "compare",
            )
        except OperationFailed as exc:
            raise VerificationFailed(target.name, f"does not verify: {exc}") from None


def _opt(path: Path) -> str:
    """A path as a qemu option value (commas doubled)."""
    return str(path).replace(",", ",,")


def free_bytes(directory: str | None) -> int:
    """Free bytes where the spool goes (the system's temporary directory by default)."""
    return shutil.disk_usage(directory or tempfile.gettempdir()).free


@contextmanager
def spool_image(directory: str | None = None) -> Iterator[Path]:
    """A private temporary directory for a downloaded source and the encrypted image before
    its upload, removed with everything in it when the block ends."""
    with tempfile.TemporaryDirectory(prefix="byok-vpc-", dir=directory) as spool:
        yield Path(spool)
