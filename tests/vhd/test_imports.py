"""Start-up cost: importing the VHD engine loads neither NumPy nor `cryptography` (issue 18)."""

from __future__ import annotations

import subprocess
import sys


def test_import_leaves_numpy_to_the_paths_that_need_it() -> None:
    code = (
        "import sys, byok.vhd, byok.vhd.cli, byok.vhd.decrypt, byok.vhd.xts; "
        "print(sorted({'numpy', 'cryptography'} & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
