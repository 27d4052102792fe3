"""qcow2 + LUKS images for IBM Cloud VPC, made and checked by the real `qemu-img`
(https://cloud.ibm.com/docs/vpc?topic=vpc-create-encrypted-custom-image: QEMU >= 2.12,
`encrypt.format=luks` with a secret object). The passphrase reaches qemu-img only through a
0600 file in a private directory, removed on every exit path: never on its command line or in
its environment. No Prefect import."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


# QEMU times its PBKDF2 benchmark in thread CPU time and gives up when a round measured 0 ms
# (crypto/pbkdf.c, qcrypto_pbkdf2_count_iters: "Unable to get accurate CPU usage"); on a
# machine with tick-based CPU accounting a fast round can measure 0, so a fresh try succeeds.
_CPU_CLOCK_TOO_COARSE = "Unable to get accurate CPU usage"
_ATTEMPTS = 5


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


def encrypt_to_qcow2(
    source: Path, target: Path, passphrase: bytes, source_format: str, iter_time_ms: int
) -> None:
    """Convert `source` to a qcow2 encrypted with LUKS under `passphrase`."""
    with secret_file(passphrase) as secret:
        _run(
            [
                "convert",
                "-f",
                source_format,
                "-O",
                "qcow2",
                "--object",
                f"secret,id={SECRET_ID},file={secret}",
                "-o",
                f"encrypt.format=luks,encrypt.key-secret={SECRET_ID},"
                f"encrypt.iter-time={iter_time_ms}",
                str(source),
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
                    f"driver={source_format},file.filename={_opt(source)}",
                    opened,
                ],
                "compare",
            )
        except OperationFailed as exc:
            raise VerificationFailed(target.name, f"does not verify: {exc}") from None


def _opt(path: Path) -> str:
    """A path as a qemu option value (commas doubled)."""
    return str(path).replace(",", ",,")


@contextmanager
def spool_image() -> Iterator[Path]:
    """Where the encrypted image is written before its upload: a file in a private temporary
    directory, removed with everything in it when the block ends."""
    with tempfile.TemporaryDirectory(prefix="byok-vpc-") as spool:
        yield Path(spool) / "image.qcow2"
