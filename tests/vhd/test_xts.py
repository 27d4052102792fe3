"""Vectorised AES-XTS against FACTS.md known answers and one cryptography call per sector."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from byok.vhd.xts import SectorXts

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
def test_known_answers(key: bytes, sector: int, expected: str) -> None:
    assert bytes(SectorXts(key).encrypt(bytes(512), sector))[:16].hex() == expected


def test_several_sectors_differ_from_one_xts_call() -> None:
    data = bytes(1024)
    one_call = Cipher(algorithms.AES(KEY64), modes.XTS(bytes(16))).encryptor().update(data)
    assert bytes(SectorXts(KEY64).encrypt(data, 0)) != one_call


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
)
def test_matches_one_call_per_sector(
    key: bytes, sectors: int, first: int, batch: int, seed: bytes
) -> None:
    data = (seed * (32 * sectors))[: 512 * sectors]
    data = bytes(b ^ (i * 7 % 251) for i, b in enumerate(data))
    xts = SectorXts(key, batch_sectors=batch)
    encrypted = bytes(xts.encrypt(data, first))
    assert encrypted == reference(key, data, first)
    assert bytes(xts.decrypt(encrypted, first)) == data


def test_in_place_and_bad_lengths() -> None:
    buf = bytearray(range(256)) * 8
    expected = reference(KEY64, bytes(buf), 9)
    SectorXts(KEY64).encrypt(buf, 9, buf)
    assert bytes(buf) == expected
    with pytest.raises(ValueError, match="multiple of 512"):
        SectorXts(KEY64).encrypt(bytes(100), 0)
