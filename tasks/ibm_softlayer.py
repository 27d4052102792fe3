"""SoftLayer (classic) steps: image templates (find by name, import from COS, wait for
their transactions) and virtual servers (order once, wait until provisioned)."""

from __future__ import annotations

from typing import Any

from prefect import task
from pydantic import SecretStr

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import InstanceInfo, TemplateInfo, VirtualServerOrder
from byok.ibm_writes import create_once
from byok.polling import poll_until
from clients.ibm import IBMClients
from clients.softlayer_templates import (
    GUESTS,
    TEMPLATES,
    find_guest,
    find_template,
    get_template,
    template_info,
    wait_for_template,
)
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report
from tasks.retry import STEP_RETRIES


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
        report(f"image template {existing.name}", None, note=f"id {existing.id}")
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
    note = f"id {created.id}, from {config['uri']}"
    report(f"image template {created.name}", "import", note=note)
    return created


@task(name="Wait for the image template", **STEP_RETRIES)
def wait_for_import(
    credentials: IBMCloudCredentials, template_id: int, timeout: float, interval: float
) -> TemplateInfo:
    """Wait until the template's transactions are done and it is active."""
    client = IBMClients.of(credentials).softlayer()
    template = get_template(client, template_id)
    waited = template.busy or template.status != "ACTIVE"
    if waited:
        template = wait_for_template(client, template_id, timeout, interval)
    report(f"image template {template.name}", "wait for" if waited else None, note=template.status)
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


@task(name="Order a virtual server from the template", **STEP_RETRIES)
def order_virtual_server(
    credentials: IBMCloudCredentials, order: VirtualServerOrder, global_identifier: str
) -> int:
    """generateOrderTemplate (dry run), then createObject, unless a server with the host name
    and domain exists (then it is reused); returns its id."""
    client = IBMClients.of(credentials).softlayer()
    name = f"virtual server {order.hostname}.{order.domain}"
    existing = find_guest(client, order.hostname, order.domain)
    if existing is not None:
        report(name, None, note=f"id {existing}")
        return existing
    template = guest_template(order, global_identifier)
    client.call(GUESTS, "generateOrderTemplate", template)
    guest_id = create_once(
        lambda: int(client.call(GUESTS, "createObject", template)["id"]),
        lambda: find_guest(client, order.hostname, order.domain),
        name,
    )
    report(name, "create", note=f"id {guest_id}")
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

    waited = state() != "provisioned"
    if waited:
        poll_until(
            state,
            frozenset({"provisioned"}),
            timeout_seconds=timeout,
            interval_seconds=interval,
            what=f"virtual server {guest_id}",
        )
    name = f"virtual server {last.get('fullyQualifiedDomainName')}"
    report(name, "wait for" if waited else None, note=f"provisioned {last['provisionDate']}")
    return InstanceInfo(
        id=guest_id,
        global_identifier=str(last.get("globalIdentifier") or ""),
        fqdn=str(last.get("fullyQualifiedDomainName") or ""),
        provision_date=str(last["provisionDate"]),
    )
