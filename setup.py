"""Builds the optional C accelerator of byok.vhd.xts (OpenSSL AES-XTS per sector).

Everything else lives in pyproject.toml. The extension is optional: without a C compiler or the
OpenSSL headers (Debian: libssl-dev) installation still succeeds and byok.vhd.xts uses NumPy.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "byok.vhd._xts",
            sources=["byok/vhd/_xts.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)
