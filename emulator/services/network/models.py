"""Microsoft.Network, as far as a VM needs it: virtual networks with subnets, and network
interfaces in a subnet."""

from __future__ import annotations

from typing import Any

from emulator.http import HttpError
from emulator.services.arm.models import ArmModel, PutContext, TypeHooks, TypeSpec

VNET_TYPE = "Microsoft.Network/virtualNetworks"
SUBNET_TYPE = "Microsoft.Network/virtualNetworks/subnets"
NIC_TYPE = "Microsoft.Network/networkInterfaces"


class VirtualNetworkHooks(TypeHooks):
    """Inline subnets become child resources."""

    def validate(self, ctx: PutContext) -> None:
        space = ((ctx.body.get("properties") or {}).get("addressSpace") or {}).get(
            "addressPrefixes"
        )
        if not space:
            raise HttpError(
                400, "InvalidRequestFormat", "properties.addressSpace.addressPrefixes is required."
            )

    def build(self, ctx: PutContext, resource: dict[str, Any]) -> None:
        for subnet in resource["properties"].get("subnets") or []:
            subnet["id"] = f"{resource['id']}/subnets/{subnet['name']}"

    def succeeded(self, arm: ArmModel, resource: dict[str, Any]) -> None:
        for subnet in resource["properties"].get("subnets") or []:
            arm.resources[subnet["id"].lower()] = {
                "id": subnet["id"],
                "name": subnet["name"],
                "type": SUBNET_TYPE,
                "properties": {
                    **(subnet.get("properties") or {}),
                    "provisioningState": "Succeeded",
                },
            }


class NetworkInterfaceHooks(TypeHooks):
    """Each IP configuration's subnet must exist."""

    def validate(self, ctx: PutContext) -> None:
        configs = (ctx.body.get("properties") or {}).get("ipConfigurations") or []
        if not configs:
            raise HttpError(
                400, "InvalidRequestFormat", "properties.ipConfigurations needs one entry."
            )
        for config in configs:
            subnet = ((config.get("properties") or {}).get("subnet") or {}).get("id")
            if not subnet or ctx.arm.get(subnet) is None:
                raise HttpError(
                    400,
                    "InvalidResourceReference",
                    f"The subnet '{subnet}' referenced by the network interface was not found.",
                )


def register_types(arm: ArmModel) -> None:
    """Serve virtual networks, subnets and network interfaces (201 + Azure-AsyncOperation)."""
    arm.register_type(
        TypeSpec(
            VNET_TYPE,
            lro="azure-async-operation",
            create_status=201,
            hooks=VirtualNetworkHooks(),
            delete_lro="location",
        )
    )
    arm.register_type(
        TypeSpec(
            SUBNET_TYPE,
            lro="azure-async-operation",
            create_status=201,
            tracked=False,
            delete_lro="location",
        )
    )
    arm.register_type(
        TypeSpec(
            NIC_TYPE,
            lro="azure-async-operation",
            create_status=201,
            hooks=NetworkInterfaceHooks(),
            delete_lro="location",
        )
    )
