"""A bounded in-memory byte pipe between threads, with failure passed both ways: when one
end fails, the other end's next read or write raises instead of hanging or seeing a clean
end of stream."""

from __future__ import annotations

import collections
import io
import threading
from typing import Any


class PipeBroken(RuntimeError):
    """The other end of the pipe failed (the cause is chained)."""


class BytePipe(io.RawIOBase):
    """Write from one thread, read from another; at most `capacity` bytes are buffered."""

    def __init__(self, capacity: int = 16 << 20) -> None:
        super().__init__()
        self.capacity = capacity
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _check(self) -> None:
        if self._error is not None:
            raise PipeBroken(f"the other end failed: {self._error}") from self._error

    def write(self, data: Any) -> int:
        """Queue `data` (waits while the pipe is full)."""
        view = memoryview(bytes(data))
        with self._cond:
            while True:
                self._check()
                if self._eof:
                    raise PipeBroken("write after end of stream")
                if self._size < self.capacity:
                    break
                self._cond.wait()
            self._chunks.append(view)
            self._size += len(view)
            self._cond.notify_all()
        return len(view)

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` with what is queued (waits for data; 0 at the end of stream)."""
        out = memoryview(buffer).cast("B")
        with self._cond:
            while not self._chunks:
                self._check()
                if self._eof:
                    return 0
                self._cond.wait()
            done = 0
            while self._chunks and done < len(out):
                chunk = self._chunks[0]
                n = min(len(chunk), len(out) - done)
                out[done : done + n] = chunk[:n]
                done += n
                if n == len(chunk):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = chunk[n:]
            self._size -= done
            self._cond.notify_all()
            return done

    def finish(self) -> None:
        """The writer is done: readers see the end of stream once the data is read."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Either end failed: the other end raises PipeBroken from now on."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._chunks.clear()
            self._size = 0
            self._cond.notify_all()
