"""Benchmark of the IBM image transfer (not a test): the streaming download → encrypt → upload
pipeline of `provision-encrypted-ibm-image` against the same three steps run one after
another (through temporary files), on the same image, in the same run, against the
emulator's COS (moto, in a child process so that it does not share our GIL).

    python bench/ibm_pipeline.py [--size-mib 512] [--part-mib 64] [--in-process]

Prints each sequential stage's time, their sum, the pipeline's time and its ratio to the
slowest stage (target: at most 1.2).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from byok.ibm_cos_io import upload_stream
from byok.ibm_pipe import BytePipe
from byok.vhd import encrypt_vhd, vhd_info

MIB = 1 << 20
CHUNK = MIB  # tasks.ibm_transfer.CHUNK
PIPE_CAPACITY = 8 * MIB  # flows.ibm_image.PIPE_CAPACITY
BUCKET = "bench-images"


def make_image(path: Path, size: int, workdir: Path) -> str:
    """A dynamic VHD of `size` bytes, every block allocated with random data."""
    raw = workdir / "disk.raw"
    with open(raw, "wb") as handle:
        for _ in range(size // (64 * MIB)):
            handle.write(os.urandom(64 * MIB))
        handle.write(os.urandom(size % (64 * MIB)))
    if shutil.which("qemu-img"):
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
             str(raw), str(path)],
            check=True,
        )  # fmt: skip
        how = "qemu-img convert -O vpc -o subformat=dynamic"
    else:  # a fixed VHD: the raw data and a footer
        from byok.vhd.format import Footer

        with open(raw, "ab") as handle:
            handle.write(Footer(2, size, size, creator_app=b"bnch").pack())
        raw.rename(path)
        how = "synthetic fixed VHD"
    raw.unlink(missing_ok=True)
    with open(path, "rb") as handle:
        info = vhd_info(handle)
    return f"{how}: {info.disk_type}, virtual {info.virtual_size / MIB:.0f} MiB"


def _serve(queue: Any, stop: Any) -> None:
    from emulator.server import Emulator

    with Emulator() as emulator:
        ibm = emulator.ibm_identity
        queue.put(
            (emulator.cos.endpoint, ibm.cos_hmac_access_key_id, ibm.cos_hmac_secret_access_key)
        )
        stop.wait()


def s3_client(endpoint: str, key_id: str, secret: str) -> Any:
    """The client the flow uses (ibm_boto3, HMAC), as IBMClients.cos builds it."""
    import ibm_boto3
    from ibm_botocore.client import Config

    return ibm_boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 5}, max_pool_connections=16),
    )


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def download_to(s3: Any, key: str, out: Any) -> None:
    for chunk in s3.get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks(CHUNK):
        out.write(chunk)


def upload_from(s3: Any, source: Any, key: str, part: int) -> None:
    upload_stream(
        s3, source, BUCKET, key, threshold=200 * MIB, part_size=part, metadata={"bench": "1"}
    )


def pipeline(s3: Any, dek: bytes, part: int) -> None:
    """What flows.ibm_image.transfer runs: three threads joined by bounded pipes."""
    plain, encrypted = BytePipe(PIPE_CAPACITY), BytePipe(PIPE_CAPACITY)
    errors: list[BaseException] = []

    def stage(run: Callable[[], None], *pipes: BytePipe) -> threading.Thread:
        def body() -> None:
            try:
                run()
            except BaseException as exc:
                errors.append(exc)
                for pipe in pipes:
                    pipe.fail(exc)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    def read() -> None:
        download_to(s3, "source.vhd", plain)
        plain.finish()

    def encrypt() -> None:
        encrypt_vhd(io.BufferedReader(plain, CHUNK), encrypted, dek)  # type: ignore[arg-type]
        encrypted.finish()

    threads = [
        stage(read, plain),
        stage(encrypt, plain, encrypted),
        stage(lambda: upload_from(s3, io.BufferedReader(encrypted, CHUNK), "piped.vhd", part),
              encrypted),
    ]  # fmt: skip
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="image size (MiB)")
    parser.add_argument("--part-mib", type=int, default=64, help="multipart part size (MiB)")
    parser.add_argument("--in-process", action="store_true", help="run moto in this process")
    args = parser.parse_args()
    part = args.part_mib * MIB
    dek = os.urandom(64)
    with tempfile.TemporaryDirectory(prefix="ibm-bench-") as tmp:
        work = Path(tmp)
        image = work / "source.vhd"
        print("image:", make_image(image, args.size_mib * MIB, work), flush=True)
        size = image.stat().st_size
        stop: Any
        if args.in_process:
            from emulator.server import Emulator

            emulator = Emulator().start()
            ibm = emulator.ibm_identity
            endpoint = (emulator.cos.endpoint, ibm.cos_hmac_access_key_id,
                        ibm.cos_hmac_secret_access_key)  # fmt: skip
            stop = emulator
        else:
            context = mp.get_context("spawn")
            queue, event = context.Queue(), context.Event()
            child = context.Process(target=_serve, args=(queue, event), daemon=True)
            child.start()
            endpoint = queue.get(timeout=60)
        try:
            s3 = s3_client(*endpoint)
            s3.create_bucket(
                Bucket=BUCKET,
                CreateBucketConfiguration={"LocationConstraint": "us-south-standard"},
            )
            with open(image, "rb") as handle:
                upload_from(s3, handle, "source.vhd", part)
            plain_file, encrypted_file = work / "downloaded.vhd", work / "encrypted.vhd"

            def step_download() -> None:
                with open(plain_file, "wb") as out:
                    download_to(s3, "source.vhd", out)

            def step_encrypt() -> None:
                encrypt_vhd(plain_file, encrypted_file, dek)

            def step_upload() -> None:
                with open(encrypted_file, "rb") as source:
                    upload_from(s3, source, "sequential.vhd", part)

            stages = {
                "download": timed(step_download),
                "encrypt": timed(step_encrypt),
                "upload": timed(step_upload),
            }
            s3.delete_object(Bucket=BUCKET, Key="sequential.vhd")
            piped = timed(lambda: pipeline(s3, dek, part))
            stored = s3.head_object(Bucket=BUCKET, Key="piped.vhd")["ContentLength"]
            assert stored == encrypted_file.stat().st_size, (stored, encrypted_file.stat())
        finally:
            if args.in_process:
                stop.stop()
            else:
                event.set()
                child.join(timeout=30)
    slowest = max(stages, key=lambda k: stages[k])
    total = sum(stages.values())
    print(f"source {size / MIB:.0f} MiB, encrypted {stored / MIB:.0f} MiB, parts {args.part_mib}"
          f" MiB, moto {'in process' if args.in_process else 'in a child process'}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    for name, seconds in stages.items():
        print(f"  sequential {name:<9} {seconds:7.2f} s  {size / MIB / seconds:7.1f} MiB/s")
    print(f"  sequential total     {total:7.2f} s")
    print(f"  pipeline             {piped:7.2f} s  {size / MIB / piped:7.1f} MiB/s")
    ratio = piped / stages[slowest]
    print(
        f"pipeline / slowest stage ({slowest}) = {ratio:.2f} (target <= 1.2: "
        f"{'met' if ratio <= 1.2 else 'NOT met'}); pipeline / sequential total = "
        f"{piped / total:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
