"""Parallel read → transform → ordered write over 2 MiB blocks with a fixed pool of buffers.

A reader thread takes a buffer from the pool for each block, in source order, and fills it, or
(blocks of a regular file stored as is) maps the block read-only instead of copying it;
`workers` threads drop all-zero blocks (when asked) and transform the others into their
buffers (AES-XTS in C, GIL released), each with its own transform; the calling thread puts the
results back in source order, reports progress and hands them to a writer thread, which writes
them and returns the buffers to the pool. Memory stays at the pool size (`workers + 2 * depth`
buffers of 2 MiB; a mapped block counts only while a worker reads it) whatever the image size.

On any failure (an exception in a thread, or a signal handler raising in the calling thread)
the workers and the writer are stopped and joined before the error propagates, so nothing
writes to the output afterwards (the writer is given `_WRITER_GRACE` seconds: a write to a
stuck pipe must not hold an interrupted run). The reader is not waited for (it may be blocked
on a pipe); it stops by itself at its next block.

With one worker (one core), nothing can run in parallel: the calling thread reads, transforms
and writes each block itself, in one 2 MiB buffer, without the hand-overs between four threads
(they cost about 0.06 CPU s/GiB on one core: best of 8 interleaved runs of
`bench/vhd_encrypt.py`'s one-core encryption, 0.75 against 0.81).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from byok.vhd.format import BLOCK_SIZE
from byok.vhd.reader import Holes, VhdReader
from byok.vhd.xts import is_zero

Progress = Callable[[int, int], None]
Transform = Callable[[int, memoryview, memoryview, "Holes | None"], None]
"""`transform(index, data, out, holes)` writes block `index` transformed into `out`; `data` is
`out` itself or a read-only mapped block (see `VhdReader.blocks`)."""

_DONE = object()
_POLL = 0.2  # seconds between checks of the stop flag while blocked on a queue
_WRITER_GRACE = 10.0  # seconds a failed run waits for a write in progress (a stuck pipe)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Stopped(Exception):
    """Raised inside the reader thread once the pipeline has stopped."""


def default_workers() -> int:
    """One transform thread per available core, at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def run_blocks(
    reader: VhdReader,
    new_transform: Callable[[], Transform],
    write: Callable[[int, memoryview], None],
    *,
    skip_zero: bool,
    progress: Progress | None = None,
    workers: int | None = None,
    depth: int = 2,
) -> int:
    """Stream every data block of `reader` through a transform into `write`, in source order.

    Each worker thread calls `new_transform()` once (transforms need not be thread-safe); one
    worker runs in the calling thread. All-zero blocks are dropped when `skip_zero`. Returns
    the number of blocks written.
    """
    workers = workers or default_workers()
    if workers == 1:
        return _run_inline(reader, new_transform(), write, skip_zero, progress)
    pool: queue.Queue[memoryview] = queue.Queue()
    for _ in range(workers + 2 * depth):
        pool.put(memoryview(bytearray(BLOCK_SIZE)))
    tasks: queue.Queue[Any] = queue.Queue()
    done: queue.Queue[Any] = queue.Queue()
    to_write: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def buffers() -> Iterator[memoryview]:
        while True:
            try:
                yield pool.get(timeout=_POLL)
            except queue.Empty:
                if stop.is_set():
                    raise _Stopped from None

    def read_loop() -> None:
        count = 0
        pool_buffers = buffers()
        try:
            for index, data, holes in reader.blocks(pool_buffers, mapped=True):
                buf = next(pool_buffers) if data.readonly else data  # mapped: output buffer
                if stop.is_set():
                    return
                tasks.put((count, index, data, buf, holes))
                del data, buf  # a mapped block is unmapped once its worker is done with it
                count += 1
            done.put((_DONE, count))
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the calling thread
            done.put(_Failure(exc))
        finally:
            for _ in range(workers):
                tasks.put(_DONE)

    def work(transform: Transform, seq: int, index: int, data: memoryview, buf: memoryview,
             holes: Holes | None) -> None:  # fmt: skip
        # a function of its own: a mapped block is unmapped when it returns
        if skip_zero and is_zero(data):
            done.put((seq, index, None))
            pool.put(buf)
        else:
            transform(index, data, buf, holes)
            done.put((seq, index, buf))

    def work_loop() -> None:
        try:
            transform = new_transform()
            while (item := tasks.get()) is not _DONE:
                if not stop.is_set():
                    work(transform, *item)
                item = None
        except BaseException as exc:  # handed to the calling thread
            done.put(_Failure(exc))

    def write_loop() -> None:
        while (item := to_write.get()) is not _DONE:
            index, buf = item
            if not stop.is_set():
                try:
                    write(index, buf)
                except BaseException as exc:  # handed to the calling thread
                    done.put(_Failure(exc))
                    stop.set()
            pool.put(buf)

    reader_thread = threading.Thread(target=read_loop, name="vhd-read", daemon=True)
    others = [threading.Thread(target=work_loop, name=f"vhd-xts-{n}", daemon=True)
              for n in range(workers)]  # fmt: skip
    others.append(threading.Thread(target=write_loop, name="vhd-write", daemon=True))
    reader_thread.start()
    for thread in others:
        thread.start()
    total = reader.virtual_size or 0
    pending: dict[int, tuple[int, memoryview | None]] = {}
    handed = written = 0  # blocks put back in order; blocks written (not dropped)
    expected: int | None = None
    try:
        with reader.shrink_errors():  # a worker read a mapped block of a shrunk file
            while expected is None or handed < expected:
                item = done.get()
                if isinstance(item, _Failure):
                    raise item.error
                if item[0] is _DONE:
                    expected = item[1]
                    continue
                seq, index, buf = item
                pending[seq] = (index, buf)
                while handed in pending:
                    index, kept = pending.pop(handed)
                    handed += 1
                    if kept is not None:
                        to_write.put((index, kept))
                        written += 1
                    if progress is not None:
                        _report(progress, index, total)
            to_write.put(_DONE)
            others[-1].join()
            _raise_failure(done)
        reader_thread.join()
        return written
    except BaseException:
        stop.set()
        raise
    finally:
        to_write.put(_DONE)
        for _ in range(workers):
            tasks.put(_DONE)
        for thread in others[:-1]:
            thread.join()
        others[-1].join(_WRITER_GRACE)


def _run_inline(
    reader: VhdReader,
    transform: Transform,
    write: Callable[[int, memoryview], None],
    skip_zero: bool,
    progress: Progress | None,
) -> int:
    """`run_blocks` in the calling thread, with one buffer."""
    buf = memoryview(bytearray(BLOCK_SIZE))
    total = reader.virtual_size or 0
    written = 0
    with reader.shrink_errors():
        for index, data, holes in reader.blocks(itertools.repeat(buf), mapped=True):
            if not (skip_zero and is_zero(data)):
                transform(index, data, buf, holes)
                write(index, buf)
                written += 1
            del data  # no reference left here to a mapped block: unmapped when done
            if progress is not None:
                _report(progress, index, total)
    return written


def _report(progress: Progress, index: int, total: int) -> None:
    end = (index + 1) * BLOCK_SIZE
    progress(min(end, total or end), total)


def _raise_failure(done: queue.Queue[Any]) -> None:
    """Raise the first failure a thread reported after the last block was handed over."""
    while True:
        try:
            item = done.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, _Failure):
            raise item.error
