"""Finding the account's VPC resources by name, as the VPC steps get or create them (and
their plan reads them)."""

from __future__ import annotations

from typing import Any

from clients.ibm import IBMClients


def named(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The item called `name`, or None."""
    return next((i for i in items if i.get("name") == name), None)


def find_image(clients: IBMClients, name: str) -> dict[str, Any] | None:
    """The account's VPC image of this name in the region."""
    return named(clients.vpc().list_images(name=name).get_result()["images"], name)


def find_vpc(clients: IBMClients, name: str) -> dict[str, Any] | None:
    """The VPC of this name."""
    return named(clients.vpc().list_vpcs().get_result()["vpcs"], name)


def find_subnet(clients: IBMClients, name: str) -> dict[str, Any] | None:
    """The subnet of this name."""
    return named(clients.vpc().list_subnets().get_result()["subnets"], name)


def find_instance(clients: IBMClients, name: str) -> dict[str, Any] | None:
    """The virtual server instance of this name."""
    return named(clients.vpc().list_instances(name=name).get_result()["instances"], name)
