"""The real Azure CLI, logged in to an emulator in a private configuration by sourcing the
lines `byok emulator az-env` writes. Installs nothing: `az` comes from BYOK_AZ or PATH
(`./scripts/install-azure-cli` puts the pinned one in .azcli/)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from console.az_env import az_env_lines
from emulator.server import Emulator

AZ = os.environ.get("BYOK_AZ") or shutil.which("az")
needs_az = pytest.mark.skipif(
    not AZ,
    reason="the Azure CLI is not installed: run ./scripts/install-azure-cli and set "
    "BYOK_AZ=.azcli/bin/az (./dev test does), or put az on PATH",
)
AZ_TIMEOUT = 120


class Az:
    """Runs the CLI in a private configuration: `az(*args)` → parsed JSON output."""

    def __init__(self, executable: str, env: dict[str, str]) -> None:
        self.executable, self.env = executable, env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The finished `az` process."""
        return subprocess.run(
            [self.executable, *args, "--output", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=AZ_TIMEOUT,
        )

    def __call__(self, *args: str) -> Any:
        done = self.run(*args)
        assert done.returncode == 0, f"az {' '.join(args)}\n{done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None


def logged_in(emulator: Emulator, home: Path) -> Az:
    """The CLI with its configuration in `home`, logged in to `emulator`."""
    assert AZ is not None
    lines = az_env_lines(emulator.endpoints(), emulator.identity.client_secret, home / "config")
    script = home / "az-env.sh"
    script.write_text("set -e\n" + "\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["PATH"] = f"{Path(AZ).parent}{os.pathsep}{env.get('PATH', '')}"
    setup = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=AZ_TIMEOUT
    )
    assert setup.returncode == 0, setup.stderr
    for line in lines:
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = shlex.split(value)[0]
    return Az(AZ, env)
