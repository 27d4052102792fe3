"""Benchmark of byok.vhd encryption (not a test): run `python bench/vhd_encrypt.py`.

Prints, in one run on the same data:
- single-core in-memory AES-XTS throughput of `SectorXts` (512-byte sectors, plain tweak), for
  each backend available (the OpenSSL C extension when built, and the NumPy fallback);
- `openssl speed -evp aes-256-xts` on 512-byte units (the speed class to compare with);
- file to file: encrypt a 1 GiB dynamic VHD (random data) to a new file, fsync'd;
- `qemu-img convert` of the same VHD to LUKS aes-xts (the reference we can run here);
- peak memory (max RSS of a child process) encrypting a sparse 100 GiB VHD and the 1 GiB one.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from byok.vhd import encrypt_vhd
from byok.vhd.xts import BACKENDS, SectorXts

GIB = 1 << 30
MIB = 1 << 20


def in_memory(size: int, rounds: int, backend: str) -> float:
    """GB/s of SectorXts.encrypt in place on one thread (best of `rounds`)."""
    xts = SectorXts(os.urandom(64), backend=backend)
    buf = np.frombuffer(os.urandom(size), dtype=np.uint8).copy()
    xts.encrypt(buf, 0, buf)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        xts.encrypt(buf, 0, buf)
        best = max(best, size / (time.perf_counter() - start) / 1e9)
    return best


def openssl_speed() -> str:
    """The `openssl speed` figure for AES-256-XTS on 512-byte blocks, in GB/s."""
    if not shutil.which("openssl"):
        return "openssl not installed"
    out = subprocess.run(
        ["openssl", "speed", "-evp", "aes-256-xts", "-bytes", "512", "-seconds", "2"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"AES-256-XTS\s+([\d.]+)k", out, re.IGNORECASE)
    return f"{float(match.group(1)) * 1000 / 1e9:.2f} GB/s" if match else out.strip()


def make_dynamic(qemu_img: str, work: Path, size: int, sparse: bool) -> Path:
    """A dynamic VHD of `size` bytes: random data, or sparse with one random block."""
    raw = work / f"src-{size}.raw"
    with open(raw, "wb") as handle:
        if sparse:
            handle.truncate(size)
            handle.seek(size // 2)
            handle.write(os.urandom(4 * MIB))
        else:
            for _ in range(size // (64 * MIB)):
                handle.write(os.urandom(64 * MIB))
    vhd = work / f"src-{size}.vhd"
    subprocess.run([qemu_img, "convert", "-q", "-f", "raw", "-O", "vpc", "-o",
                    "subformat=dynamic,force_size=on", str(raw), str(vhd)], check=True)  # fmt: skip
    raw.unlink()
    return vhd


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (VmHWM, MiB) the child reports on its last output line."""
    start = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    return wall, int(out.split()[-2]) / 1024


def encrypt_child(src: Path, dst: Path, key: Path) -> list[str]:
    """Command line encrypting in a fresh interpreter (for wall time and peak RSS)."""
    code = (
        "import sys; from byok.vhd import encrypt_vhd; "
        "encrypt_vhd(sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read()); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    return [sys.executable, "-c", code, str(src), str(dst), str(key)]


def disk_floor(work: Path, size: int) -> float:
    """Seconds to write `size` bytes to a new file and fsync it (the I/O floor, like dd)."""
    chunk = bytes(4 * MIB)
    path = work / "floor.bin"
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as handle:
        for _ in range(size // len(chunk)):
            handle.write(chunk)
        os.fsync(handle.fileno())
    wall = time.perf_counter() - start
    path.unlink()
    return wall


def main() -> int:
    """Run every benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", help="work directory (default: a temp dir on /tmp)")
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--sparse-gib", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="file-to-file runs")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])

    for backend in BACKENDS:
        speed = in_memory(256 * MIB, 5, backend)
        print(f"in-memory SectorXts backend={backend}, 1 core, 256 MiB: {speed:.2f} GB/s")
    print(f"openssl speed -evp aes-256-xts -bytes 512: {openssl_speed()}")

    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        print("qemu-img missing: file benchmarks skipped")
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        key = work / "dek.bin"
        key.write_bytes(os.urandom(64))
        size = int(args.size_gib * GIB)
        src = make_dynamic(qemu_img, work, size, sparse=False)
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm cache
        os.sync()  # no writeback of the source left to compete with the timed fsyncs
        print(f"disk floor: write {size / GIB:.2f} GiB of zeros + fsync: "
              f"{disk_floor(work, size):.2f} s wall")  # fmt: skip

        dst = work / "enc.vhd"
        for _ in range(args.repeat):
            os.sync()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            encrypt_vhd(src, dst, key.read_bytes())
            wall = time.perf_counter() - start
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
            print(f"encrypt_vhd ({BACKENDS[0]}) {size / GIB:.2f} GiB dynamic VHD file to file "
                  f"(fsync'd, warm source cache): {wall:.2f} s wall, "
                  f"{size / wall / 1e9:.2f} GB/s, {cpu:.2f} s CPU")  # fmt: skip
            dst.unlink()
        os.sync()

        wall, rss = timed(encrypt_child(src, dst, key))
        print(f"  same in a fresh interpreter (incl. start-up): {wall:.2f} s, "
              f"peak RSS {rss:.0f} MiB")  # fmt: skip
        dst.unlink()

        luks = work / "out.luks"
        for attempt in range(5):  # qemu's PBKDF timing sometimes fails on VMs ("accurate CPU")
            start = time.perf_counter()
            options = "key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,iter-time=100"
            command = [qemu_img, "convert", "-q", "-f", "vpc", "-O", "luks", "--object",
                       "secret,id=sec0,data=benchmark-passphrase", "-o", options, str(src),
                       str(luks)]  # fmt: skip
            done = subprocess.run(command, check=attempt == 4)
            if done.returncode == 0:
                break
        with open(luks, "rb+") as handle:
            os.fsync(handle.fileno())
        wall = time.perf_counter() - start
        print(f"qemu-img convert to LUKS aes-256-xts, same VHD (fsync'd): {wall:.2f} s wall")
        luks.unlink()
        src.unlink()

        sparse = make_dynamic(qemu_img, work, args.sparse_gib * GIB, sparse=True)
        wall, rss = timed(encrypt_child(sparse, work / "sparse-enc.vhd", key))
        print(f"encrypt sparse {args.sparse_gib} GiB dynamic VHD: {wall:.2f} s, "
              f"peak RSS {rss:.0f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
