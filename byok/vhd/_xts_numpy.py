"""NumPy fallback of `byok.vhd.xts.SectorXts`, used when the C extension is not built.

Per batch of sectors:
1. one AES-ECB pass under K2 over the batch's tweak blocks, giving T0(s) = E_K2(tweak(s));
2. the 32 per-block tweaks T0(s)·alpha^j (GF(2^128) doubling) computed on a planar layout (row j
   holds T0(s)·alpha^j for every sector s, so every operation is contiguous), then one
   16-byte-element transpose into natural order;
3. C = E_K1(P ⊕ T) ⊕ T with one bulk AES-ECB pass under K1.

All buffers are preallocated; numpy and OpenSSL release the GIL on these large calls.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

SECTOR = 512
BLOCKS_PER_SECTOR = SECTOR // 16

_U64 = np.uint64
_ALL = 0xFFFFFFFFFFFFFFFF


class NumpyXts:
    """AES-XTS per 512-byte sector (plain tweak), `batch_sectors` at a time; one per thread."""

    def __init__(self, key: bytes, batch_sectors: int) -> None:
        self.batch_sectors = n = batch_sectors
        half = len(key) // 2
        data_cipher = Cipher(algorithms.AES(key[:half]), modes.ECB())
        self._data_encryptor = data_cipher.encryptor()
        self._data_decryptor = data_cipher.decryptor()
        self._tweak_encryptor = Cipher(algorithms.AES(key[half:]), modes.ECB()).encryptor()
        self._tweak_in = np.zeros((n, 4), dtype="<u4")
        # planar tweaks: row j, sector s -> (lo, hi) words of T0(s)·alpha^j; +2 words of slack
        # because ECB output buffers need 15 spare bytes.
        self._planar = np.empty(BLOCKS_PER_SECTOR * n * 2 + 2, dtype=_U64)
        self._natural = np.empty((n, BLOCKS_PER_SECTOR), dtype=np.complex128)
        self._work_in = np.empty(n * SECTOR, dtype=np.uint8)
        self._work_out = np.empty(n * SECTOR + 16, dtype=np.uint8)
        self._carry = np.empty(16 * n * 2, dtype=_U64)
        words = np.arange(16 * n * 2) % 2
        self._hi_mask = np.where(words == 1, _ALL, 0).astype(_U64)  # 1s on high words
        self._lo_mask = np.where(words == 0, _ALL, 0).astype(_U64)  # 1s on low words

    def run(self, data: memoryview, out: memoryview, first_sector: int, encrypt: bool) -> None:
        """Encrypt or decrypt the whole sectors of `data` into `out` (may be `data`)."""
        src = np.frombuffer(data, dtype=np.uint8)
        dst = np.frombuffer(out, dtype=np.uint8)
        cipher = self._data_encryptor if encrypt else self._data_decryptor
        step = self.batch_sectors * SECTOR
        for start in range(0, src.size, step):
            stop = min(start + step, src.size)
            self._batch(src[start:stop], dst[start:stop], first_sector + start // SECTOR, cipher)

    def _batch(self, src: np.ndarray, dst: np.ndarray, first: int, cipher: CipherContext) -> None:
        n = src.size // SECTOR
        tweaks = self._tweaks(n, first)
        work_in = self._work_in[: src.size]
        np.bitwise_xor(src.view(_U64), tweaks, out=work_in.view(_U64))
        cipher.update_into(work_in.data, self._work_out.data)
        np.bitwise_xor(self._work_out[: src.size].view(_U64), tweaks, out=dst.view(_U64))

    def _tweaks(self, n: int, first: int) -> np.ndarray:
        """Natural-order tweak words (n*64 u64) for sectors first..first+n-1."""
        tweak_in = self._tweak_in[:n]
        tweak_in[:, 0] = np.arange(first, first + n, dtype=np.uint64) & 0xFFFFFFFF
        row = 2 * n  # words per planar row
        planar = self._planar
        self._tweak_encryptor.update_into(
            tweak_in.reshape(-1).view(np.uint8).data, planar[: row + 2].view(np.uint8).data
        )
        rows = 1
        while rows < BLOCKS_PER_SECTOR:
            self._mul_alpha_pow(planar[: rows * row], planar[rows * row : 2 * rows * row], rows)
            rows *= 2
        natural = self._natural[:n]
        natural[...] = (
            planar[: BLOCKS_PER_SECTOR * row].view(np.complex128).reshape(BLOCKS_PER_SECTOR, n).T
        )
        return natural.reshape(-1).view(_U64)

    def _mul_alpha_pow(self, src: np.ndarray, dst: np.ndarray, k: int) -> None:
        """dst = src·alpha^k for each (lo, hi) 128-bit pair, k < 57, with whole-array operations."""
        size = src.size
        carry = self._carry[:size]
        np.left_shift(src, _U64(k), out=dst)
        np.right_shift(src, _U64(64 - k), out=carry)
        # bits leaving a low word enter its high word (the next word)
        high_in = self._work_carry(size - 1)
        np.bitwise_and(carry[:-1], self._hi_mask[1:size], out=high_in)
        np.bitwise_xor(dst[1:], high_in, out=dst[1:])
        # bits leaving a high word wrap to its low word (the previous one) times 0x87
        low_in = high_in
        np.bitwise_and(carry[1:], self._lo_mask[: size - 1], out=low_in)
        low = dst[:-1]
        if k == 1:
            np.multiply(low_in, _U64(0x87), out=low_in)
            np.bitwise_xor(low, low_in, out=low)
            return
        np.bitwise_xor(low, low_in, out=low)
        for shift in (1, 1, 5):  # x^1, x^2, x^7 terms of 0x87
            np.left_shift(low_in, _U64(shift), out=low_in)
            np.bitwise_xor(low, low_in, out=low)

    def _work_carry(self, size: int) -> np.ndarray:
        return self._work_in.view(_U64)[:size]
