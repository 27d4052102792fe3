"""AES-XTS over 512-byte sectors with the dm-crypt "plain" tweak.

Each sector s is one XTS data unit with tweak uint32_le(s mod 2^32) || 12 zero bytes, exactly
what vhd-util (OpenSSL EVP AES-XTS, one call per sector) produces.

The C extension `byok.vhd._xts` (setup.py, needs OpenSSL headers) does it with VAES (two AES
blocks per instruction, four with AVX-512) or AES-NI, whichever the CPU has (else OpenSSL
AES-ECB in 32 KiB chunks), the GIL released; it is used by default, and tells all-zero blocks
(`is_zero`), both reading under a SIGBUS guard (`BUS_ERRORS`). Without it, or with
`backend="numpy"`, the NumPy implementation in `byok.vhd._xts_numpy` (about 2.5 times as slow)
is loaded on first use: importing this module loads neither NumPy nor `cryptography`.
"""

from __future__ import annotations

from typing import Any

from byok.vhd.keys import validate_key

try:
    from byok.vhd import _xts  # type: ignore[attr-defined]
except ImportError:  # the optional C extension was not built
    _xts = None

SECTOR = 512
DEFAULT_BATCH_SECTORS = 2048

BACKENDS: tuple[str, ...] = ("c", "numpy") if _xts is not None else ("numpy",)
"""Available implementations, fastest first."""

BUS_ERRORS: tuple[type[OSError], ...] = (_xts.BusError,) if _xts is not None else ()
"""What `is_zero` and the C backend raise when their input is a mapped file that shrank (they
read under a SIGBUS guard); empty without the C extension, whose readers are unguarded."""


def is_zero(data: object) -> bool:
    """True when a buffer holds only zero bytes (a vectorised memcmp in the C extension)."""
    if _xts is not None:
        return bool(_xts.is_zero(data))
    import numpy as np

    return not np.frombuffer(data, dtype=np.uint8).any()  # type: ignore[call-overload]


def _bytes_view(data: object, writable: bool) -> memoryview:
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    if writable and view.readonly:
        raise TypeError("output buffer must be writable")
    return view


class SectorXts:
    """AES-XTS (IEEE 1619) over consecutive 512-byte sectors, one data unit per sector.

    A 32-byte key selects AES-128-XTS, a 64-byte key AES-256-XTS (first half: data key K1,
    second half: tweak key K2). Not thread-safe: use one instance per thread.
    `backend` is "c" (OpenSSL, needs the optional extension), "numpy", or None for the fastest
    available.
    """

    def __init__(
        self, key: bytes, batch_sectors: int = DEFAULT_BATCH_SECTORS, backend: str | None = None
    ) -> None:
        key = validate_key(key)
        if backend is None:
            backend = BACKENDS[0]
        if backend not in BACKENDS:
            raise ValueError(f"XTS backend {backend!r} is not available (have {BACKENDS})")
        self.backend = backend
        self.batch_sectors = batch_sectors
        self._native: Any = _xts.Xts(key) if backend == "c" else None
        self._fallback: Any = None
        if self._native is None:
            from byok.vhd._xts_numpy import NumpyXts

            self._fallback = NumpyXts(key, batch_sectors)

    def encrypt(self, data: object, first_sector: int, out: object | None = None) -> memoryview:
        """Encrypt whole sectors of `data` starting at sector `first_sector`.

        `out` (may be `data` itself) receives the ciphertext; a new buffer when omitted.
        """
        return self._run(data, first_sector, out, encrypt=True)

    def decrypt(self, data: object, first_sector: int, out: object | None = None) -> memoryview:
        """Decrypt whole sectors of `data` starting at sector `first_sector` (see `encrypt`)."""
        return self._run(data, first_sector, out, encrypt=False)

    def _run(
        self, data: object, first_sector: int, out: object | None, *, encrypt: bool
    ) -> memoryview:
        src = _bytes_view(data, writable=False)
        if src.nbytes % SECTOR:
            raise ValueError(f"data length {src.nbytes} is not a multiple of {SECTOR}")
        if out is None:
            out = bytearray(src.nbytes)
        dst = _bytes_view(out, writable=True)
        if dst.nbytes < src.nbytes:
            raise ValueError(f"output buffer holds {dst.nbytes} bytes, need {src.nbytes}")
        if self._native is not None:
            run = self._native.encrypt if encrypt else self._native.decrypt
            run(src, dst, first_sector % 2**32)
        else:
            self._fallback.run(src, dst[: src.nbytes], first_sector, encrypt)
        return dst[: src.nbytes]
