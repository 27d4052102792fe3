"""A virtual machine's power state, as its instance view reports it."""

from __future__ import annotations

from clients.azure import AzureClients


def power_state(clients: AzureClients, group: str, name: str) -> tuple[str, str]:
    """The VM's `PowerState/<state>` code and its status message (`PowerState/unknown` when
    the instance view names none)."""
    vm = clients.compute().virtual_machines.get(group, name, expand="instanceView")
    for status in (vm.instance_view.statuses if vm.instance_view else None) or []:
        if str(status.code).startswith("PowerState/"):
            return str(status.code), str(status.message or "")
    return "PowerState/unknown", ""
