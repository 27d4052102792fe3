"""Installed from a wheel, the flows find what they ship: the wheel is built from a copy of
the sources, installed into a fresh virtual environment (without its dependencies, which
come from this environment's site-packages through a .pth file), and the template flow's
template is loaded from the installed package, away from the source tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ["blocks", "byok", "clients", "console", "emulator", "flows", "tasks"]
LOAD = """
import json, tasks.acr_template
template = tasks.acr_template.load_template()
print(json.dumps({"module": tasks.acr_template.__file__,
                  "resources": [r["type"] for r in template["resources"]]}))
"""


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_the_installed_wheel_loads_the_registry_template(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = ("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q")
    run(sys.executable, *build, "-w", "dist", source, cwd=tmp_path)  # offline
    (wheel,) = (tmp_path / "dist").glob("byok_flows-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    install = ("-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q")
    run(sys.executable, *install, wheel, cwd=tmp_path)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path).strip())  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    loaded = json.loads(run(python, "-c", LOAD, cwd=tmp_path))
    assert Path(loaded["module"]).is_relative_to(venv), loaded["module"]
    assert "Microsoft.ContainerRegistry/registries" in loaded["resources"]
