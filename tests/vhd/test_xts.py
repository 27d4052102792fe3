"""Vectorised AES-XTS against FACTS.md known answers and one cryptography call per sector.

Every test runs on each available backend: NumPy always, the OpenSSL C extension when built.
"""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from byok.vhd.xts import BACKENDS, SectorXts

from .conftest import KEY32, KEY64


def reference(key: bytes, data: bytes, first: int, decrypt: bool = False) -> bytes:
    """One OpenSSL AES-XTS call per 512-byte sector with the plain tweak."""
    out = bytearray()
    for i in range(len(data) // 512):
        tweak = ((first + i) % 2**32).to_bytes(4, "little") + bytes(12)
        cipher = Cipher(algorithms.AES(key), modes.XTS(tweak))
        ctx = cipher.decryptor() if decrypt else cipher.encryptor()
        out += ctx.update(data[i * 512 : (i + 1) * 512]) + ctx.finalize()
    return bytes(out)


@pytest.mark.parametrize(
    ("key", "sector", "expected"),
    [
        (KEY64, 0, "cd6b103236fbd87dba93e9001e29bc3d"),
        (KEY64, 1, "0c22ed7e2168a8500b30154c2ec00d26"),
        (KEY64, 4096, "27d6726c05f6e028bd8b7094d5676878"),
        (KEY32, 0, "f071a2b402c105ea37024133e24d6ef6"),
        (KEY32, 1, "a8ce33a288a211258599d867beceaf25"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_known_answers(key: bytes, sector: int, expected: str, backend: str) -> None:
    assert bytes(SectorXts(key, backend=backend).encrypt(bytes(512), sector))[:16].hex() == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_sectors_differ_from_one_xts_call(backend: str) -> None:
    data = bytes(1024)
    one_call = Cipher(algorithms.AES(KEY64), modes.XTS(bytes(16))).encryptor().update(data)
    assert bytes(SectorXts(KEY64, backend=backend).encrypt(data, 0)) != one_call


keys = st.one_of(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)).filter(
    lambda k: k[: len(k) // 2] != k[len(k) // 2 :]
)


@settings(max_examples=60, deadline=None)
@given(
    key=keys,
    sectors=st.integers(min_value=1, max_value=40),
    first=st.one_of(st.integers(0, 2**20), st.integers(2**32 - 50, 2**32 + 50)),
    batch=st.sampled_from([1, 3, 16, 1024]),
    seed=st.binary(min_size=16, max_size=16),
    backend=st.sampled_from(BACKENDS),
)
def test_matches_one_call_per_sector(
    key: bytes, sectors: int, first: int, batch: int, seed: bytes, backend: str
) -> None:
    data = (seed * (32 * sectors))[: 512 * sectors]
    data = bytes(b ^ (i * 7 % 251) for i, b in enumerate(data))
    xts = SectorXts(key, batch_sectors=batch, backend=backend)
    encrypted = bytes(xts.encrypt(data, first))
    assert encrypted == reference(key, data, first)
    assert bytes(xts.decrypt(encrypted, first)) == data


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_and_bad_lengths(backend: str) -> None:
    buf = bytearray(range(256)) * 8
    expected = reference(KEY64, bytes(buf), 9)
    SectorXts(KEY64, backend=backend).encrypt(buf, 9, buf)
    assert bytes(buf) == expected
    with pytest.raises(ValueError, match="multiple of 512"):
        SectorXts(KEY64, backend=backend).encrypt(bytes(100), 0)
    with pytest.raises(ValueError, match="output buffer holds 512 bytes"):
        SectorXts(KEY64, backend=backend).encrypt(bytes(1024), 0, bytearray(512))
    with pytest.raises(TypeError):
        SectorXts(KEY64, backend=backend).encrypt(bytes(512), 0, bytes(512))


@pytest.mark.parametrize("key", [KEY32, KEY64])
def test_backends_agree_on_a_large_buffer(key: bytes) -> None:
    """Whole 2 MiB blocks (several NumPy batches) across the 2^32 sector wrap."""
    data = np.random.default_rng(7).integers(0, 256, 2 << 20, dtype=np.uint8).tobytes()
    first = 2**32 - 1000
    results = {b: bytes(SectorXts(key, backend=b).encrypt(data, first)) for b in BACKENDS}
    assert len(set(results.values())) == 1
    sample = slice(1000 * 512 - 1024, 1000 * 512 + 1024)  # the sectors around the wrap
    assert results[BACKENDS[0]][sample] == reference(key, data[sample], 2**32 - 2)
    for backend in BACKENDS:
        assert bytes(SectorXts(key, backend=backend).decrypt(results[backend], first)) == data


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="not available"):
        SectorXts(KEY64, backend="rust")


@pytest.mark.parametrize("impl", ["vaes512", "vaes", "aesni", "openssl"])
@settings(max_examples=20, deadline=None)
@given(
    key=keys,
    sectors=st.integers(min_value=1, max_value=70),
    first=st.one_of(st.integers(0, 2**20), st.integers(2**32 - 50, 2**32 + 50)),
)
def test_each_c_implementation_matches_one_call_per_sector(
    impl: str, key: bytes, sectors: int, first: int
) -> None:
    """Every implementation the CPU runs, not only the fastest (the one SectorXts picks)."""
    if "c" not in BACKENDS:
        pytest.skip("C extension not built")
    from byok.vhd import _xts  # type: ignore[attr-defined]

    try:
        xts = _xts.Xts(key, impl)
    except ValueError as exc:
        pytest.skip(str(exc))
    assert xts.impl == impl
    data = np.random.default_rng(first).integers(0, 256, 512 * sectors, dtype=np.uint8).tobytes()
    out = bytearray(len(data))
    xts.encrypt(data, out, first % 2**32)
    assert bytes(out) == reference(key, data, first)
    xts.decrypt(bytes(out), out, first % 2**32)
    assert bytes(out) == data


@pytest.mark.skipif("c" not in BACKENDS, reason="C extension not built")
def test_c_extension_guards() -> None:
    from byok.vhd import _xts  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="32 or 64 bytes"):
        _xts.Xts(bytes(48))
    with pytest.raises(ValueError, match="implementation rust is not available"):
        _xts.Xts(KEY64, "rust")
    xts = _xts.Xts(KEY64)
    buf = bytearray(2048)
    with pytest.raises(ValueError, match="overlap"):
        xts.encrypt(memoryview(buf)[:1024], memoryview(buf)[512:], 0)
    with pytest.raises(RuntimeError, match="not initialised"):
        _xts.Xts.__new__(_xts.Xts).encrypt(bytes(512), bytearray(512), 0)
