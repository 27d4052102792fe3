"""SoftLayer (classic) steps: image templates (find by name, import from COS, wait for
their transactions) and virtual servers (order once, wait until provisioned)."""

from __future__ import annotations

import time
from typing import Any

import SoftLayer
from prefect import get_run_logger, task
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import InstanceInfo, TemplateInfo, VirtualServerOrder
from byok.ibm_writes import create_once
from byok.polling import poll_until
from clients.ibm import IBMClients
from clients.softlayer_templates import TEMPLATES, find_template, template_info, wait_for_template
from tasks.in_memory import IN_MEMORY
from tasks.retry import STEP_RETRIES

GUESTS = "SoftLayer_Virtual_Guest"


@task(name="Import the encrypted image", **STEP_RETRIES, **IN_MEMORY)
def import_image(
    credentials: IBMCloudCredentials,
    config: dict[str, Any],
    api_key: SecretStr,
) -> TemplateInfo:
    """createFromIcos with the root key CRN and the wrapped DEK, unless a template with the
    name exists already (then it is reused)."""
    client = IBMClients.of(credentials).softlayer()
    existing = find_template(client, config["name"])
    if existing is not None:
        get_run_logger().info("Reusing template %s (%s)", existing.name, existing.id)
        return existing
    created = create_once(
        lambda: template_info(
            client.call(
                TEMPLATES, "createFromIcos", {**config, "ibmApiKey": api_key.get_secret_value()}
            )
        ),
        lambda: find_template(client, config["name"]),
        f"image template {config['name']}",
    )
    get_run_logger().info("Import started: template %s", created.id)
    return created


@task(name="Wait for the image template", **STEP_RETRIES)
def wait_for_import(
    credentials: IBMCloudCredentials, template_id: int, timeout: float, interval: float
) -> TemplateInfo:
    """Wait until the template's transactions are done and it is active."""
    template = wait_for_template(
        IBMClients.of(credentials).softlayer(), template_id, timeout, interval
    )
    get_run_logger().info("Template %s is %s", template_id, template.status)
    return template


def guest_template(order: VirtualServerOrder, global_identifier: str) -> dict[str, Any]:
    """The SoftLayer_Virtual_Guest template of an order."""
    return {
        "hostname": order.hostname,
        "domain": order.domain,
        "startCpus": order.cpus,
        "maxMemory": order.memory_mb,
        "datacenter": {"name": order.datacenter},
        "hourlyBillingFlag": order.hourly,
        "localDiskFlag": order.local_disk,
        "blockDeviceTemplateGroup": {"globalIdentifier": global_identifier},
    }


def find_guest(client: SoftLayer.BaseClient, order: VirtualServerOrder) -> int | None:
    """The id of the account's virtual server with the order's host name and domain."""
    guests = client.call(
        "SoftLayer_Account",
        "getVirtualGuests",
        mask="id,hostname,domain",
        filter={"virtualGuests": {"hostname": {"operation": order.hostname}}},
    )
    return next(
        (
            int(g["id"])
            for g in guests or []
            if (g["hostname"], g["domain"]) == (order.hostname, order.domain)
        ),
        None,
    )


@task(name="Order a virtual server from the template", **STEP_RETRIES)
def order_virtual_server(
    credentials: IBMCloudCredentials, order: VirtualServerOrder, global_identifier: str
) -> int:
    """generateOrderTemplate (dry run), then createObject, unless a server with the host name
    and domain exists (then it is reused); returns its id."""
    client = IBMClients.of(credentials).softlayer()
    existing = find_guest(client, order)
    if existing is not None:
        get_run_logger().info("Reusing virtual server %s", existing)
        return existing
    template = guest_template(order, global_identifier)
    client.call(GUESTS, "generateOrderTemplate", template)
    guest_id = create_once(
        lambda: int(client.call(GUESTS, "createObject", template)["id"]),
        lambda: find_guest(client, order),
        f"virtual server {order.hostname}.{order.domain}",
    )
    get_run_logger().info("Ordered virtual server %s", guest_id)
    return guest_id


@task(name="Wait until the virtual server is provisioned", **STEP_RETRIES)
def wait_for_provisioning(
    credentials: IBMCloudCredentials, guest_id: int, timeout: float, interval: float
) -> InstanceInfo:
    """Poll getObject until provisionDate is set."""
    client = IBMClients.of(credentials).softlayer()
    last: dict[str, Any] = {}

    def state() -> str:
        last.clear()
        last.update(client.call(GUESTS, "getObject", id=guest_id))
        return "provisioned" if last.get("provisionDate") else "provisioning"

    started = time.monotonic()
    poll_until(
        state,
        frozenset({"provisioned"}),
        timeout_seconds=timeout,
        interval_seconds=interval,
        what=f"virtual server {guest_id}",
    )
    get_run_logger().info(
        "Virtual server %s provisioned after %.1f s", guest_id, time.monotonic() - started
    )
    return InstanceInfo(
        id=guest_id,
        global_identifier=str(last.get("globalIdentifier") or ""),
        fqdn=str(last.get("fullyQualifiedDomainName") or ""),
        provision_date=str(last["provisionDate"]),
    )
