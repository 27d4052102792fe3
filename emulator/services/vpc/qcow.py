"""The import check of an encrypted custom image, done by `qemu-img` itself: the object must
be a qcow2 encrypted with LUKS whose passphrase is the unwrapped data key
(https://cloud.ibm.com/docs/vpc?topic=vpc-create-encrypted-custom-image). The passphrase only
ever sits in a 0600 secret file handed to qemu-img with `--object secret,file=`."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path


class BadImage(Exception):
    """Why the image cannot be imported (never names the passphrase); `code` is the image's
    status reason (ibm-vpc's ImageStatusReason: "image data is corrupt, or is not in the
    specified format")."""

    code = "image_data_corrupted"


class DataKeyInvalid(BadImage):
    """The image cannot be decrypted with its `encryption_key` (the wrapped key does not
    unwrap, or what it unwraps to opens no LUKS key slot)."""

    code = "encrypted_data_key_invalid"


def info(path: Path) -> dict[str, object]:
    """`qemu-img info` of a file (format probed)."""
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise BadImage(f"qemu-img cannot read the object: {done.stderr.strip()}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def check_encrypted(path: Path, passphrase: bytes | None) -> int:
    """The virtual size of a LUKS-encrypted qcow2 (passphrase given) or of a plain qcow2
    (None); BadImage when it is not that, or the passphrase opens no key slot."""
    details = info(path)
    if details.get("format") != "qcow2":
        raise BadImage(f"the object is {details.get('format')!r}, not qcow2")
    specific = details.get("format-specific") or {}
    data = specific.get("data", {}) if isinstance(specific, dict) else {}
    encryption = (data.get("encrypt") or {}).get("format") if isinstance(data, dict) else None
    if passphrase is None:
        if encryption:
            raise BadImage("the image is encrypted but no encrypted_data_key was given")
        return int(str(details["virtual-size"]))
    if encryption != "luks":
        raise BadImage(f"the qcow2 is not LUKS-encrypted (encryption {encryption!r})")
    with tempfile.TemporaryDirectory(prefix="vpc-import-") as scratch:
        secret = Path(scratch) / "passphrase"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(passphrase)
        done = subprocess.run(
            [
                "qemu-img",
                "check",
                "--object",
                f"secret,id=sec0,file={secret}",
                "--image-opts",
                f"driver=qcow2,file.filename={path},encrypt.key-secret=sec0",
            ],
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or ["unknown"]
        raise DataKeyInvalid(
            f"the LUKS header cannot be opened with the unwrapped key: {reason[0]}"
        )
    return int(str(details["virtual-size"]))
