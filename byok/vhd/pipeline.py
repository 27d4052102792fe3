"""Overlapping read → transform → write over 2 MiB blocks with a fixed pool of buffers.

A reader thread fills buffers (and spots all-zero blocks), the calling thread transforms them
in place (AES-XTS: OpenSSL and numpy release the GIL), a writer thread writes them and hands
the buffers back. Memory stays at `depth` x 2 MiB whatever the image size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from byok.vhd.format import BLOCK_SIZE
from byok.vhd.reader import VhdReader

Progress = Callable[[int, int], None]
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def is_zero(buf: memoryview) -> bool:
    """True when the block holds only zero bytes."""
    return not np.frombuffer(buf, dtype=np.uint64).any()


def run_blocks(
    reader: VhdReader,
    transform: Callable[[int, memoryview], None],
    write: Callable[[int, memoryview], None],
    *,
    skip_zero: bool,
    progress: Progress | None = None,
    depth: int = 4,
) -> int:
    """Stream every data block of `reader` through `transform` into `write`.

    All-zero blocks are dropped when `skip_zero`. Returns the number of blocks written.
    """
    pool: queue.Queue[memoryview] = queue.Queue()
    for _ in range(2 * depth + 3):
        pool.put(memoryview(bytearray(BLOCK_SIZE)))
    to_transform: queue.Queue[Any] = queue.Queue(maxsize=depth)
    to_write: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    write_error: list[BaseException] = []

    def buffers() -> Iterator[memoryview]:
        while True:
            yield pool.get()

    def read_loop() -> None:
        try:
            for index, buf in reader.blocks(buffers()):
                if stop.is_set():
                    break
                if skip_zero and is_zero(buf):
                    pool.put(buf)
                    continue
                to_transform.put((index, buf))
            to_transform.put(_DONE)
        except BaseException as exc:  # handed to the calling thread
            to_transform.put(_Failure(exc))

    def write_loop() -> None:
        while True:
            item = to_write.get()
            if item is _DONE:
                return
            index, buf = item
            if not write_error:
                try:
                    write(index, buf)
                except BaseException as exc:  # handed to the calling thread
                    write_error.append(exc)
                    stop.set()
            pool.put(buf)

    threads = [threading.Thread(target=read_loop, daemon=True),
               threading.Thread(target=write_loop, daemon=True)]  # fmt: skip
    for thread in threads:
        thread.start()
    total = reader.virtual_size or 0
    written = 0
    failure: BaseException | None = None
    try:
        while True:
            item = to_transform.get()
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                failure = item.error
                break
            if write_error:
                pool.put(item[1])
                break
            index, buf = item
            transform(index, buf)
            to_write.put((index, buf))
            written += 1
            if progress is not None:
                progress(min((index + 1) * BLOCK_SIZE, total or (index + 1) * BLOCK_SIZE), total)
    except BaseException as exc:
        failure = exc
    finally:
        stop.set()
        to_write.put(_DONE)
        threads[1].join()
        while threads[0].is_alive():  # let a blocked reader finish
            try:
                item = to_transform.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, tuple):
                pool.put(item[1])
        threads[0].join()
    if failure is not None:
        raise failure
    if write_error:
        raise write_error[0]
    return written
