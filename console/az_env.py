"""The shell lines that point a private Azure CLI configuration at the emulator, registered
as a cloud of its own (as Azure Stack and sovereign-cloud users do)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

CLOUD_NAME = "BYOKEmulator"


def az_env_lines(endpoints: Mapping[str, str], client_secret: str, config_dir: Path) -> list[str]:
    """`source`-able bash lines: a private AZURE_CONFIG_DIR trusting the emulator's CA, the
    emulator registered (or updated, when re-sourced) and selected as the active cloud, and
    the emulator's service principal logged in."""
    arm = shlex.quote(endpoints["arm"])
    return [
        f"export AZURE_CONFIG_DIR={shlex.quote(str(config_dir))}",
        f"export REQUESTS_CA_BUNDLE={shlex.quote(endpoints['ca_bundle'])}",
        "export AZURE_CORE_INSTANCE_DISCOVERY=false",
        "export AZURE_CORE_COLLECT_TELEMETRY=false",
        f"az cloud register -n {CLOUD_NAME} --endpoint-resource-manager {arm} 2>/dev/null"
        f" || az cloud update -n {CLOUD_NAME} --endpoint-resource-manager {arm}",
        f"az cloud set -n {CLOUD_NAME} --only-show-errors",
        "az account clear",  # tokens of an earlier emulator run are not valid any more
        f"az login --service-principal -u {shlex.quote(endpoints['client_id'])}"
        f" -p {shlex.quote(client_secret)} --tenant {shlex.quote(endpoints['tenant_id'])}"
        " --output none",
    ]
