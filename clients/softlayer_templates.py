"""SoftLayer image templates as the IBM steps read them: one template by id or by name, a
wait until its transactions are done, and the check that it can be exported; and a virtual
server by host name."""

from __future__ import annotations

from typing import Any

import SoftLayer

from byok.errors import OperationFailed
from byok.ibm_models import TemplateInfo
from byok.polling import poll_until
from byok.validation import InvalidRequest

TEMPLATES = "SoftLayer_Virtual_Guest_Block_Device_Template_Group"
GUESTS = "SoftLayer_Virtual_Guest"
TEMPLATE_MASK = "id,globalIdentifier,name,note,status,encryptionAttributes,transactionId,children"


class ImportFailed(OperationFailed):
    """The import (or export) transaction ended without an active template."""


def template_info(data: dict[str, Any]) -> TemplateInfo:
    """A template as later steps use it; busy while it or a child has a transaction."""
    children = data.get("children") or []
    return TemplateInfo(
        id=int(data["id"]),
        global_identifier=str(data.get("globalIdentifier") or ""),
        name=str(data["name"]),
        status=str((data.get("status") or {}).get("keyName") or ""),
        encrypted="ENCRYPTED" in (data.get("encryptionAttributes") or []),
        busy=bool(data.get("transactionId") or any(c.get("transactionId") for c in children)),
    )


def get_template(client: SoftLayer.BaseClient, template_id: int) -> TemplateInfo:
    """The template `template_id` (getObject with its children)."""
    return template_info(client.call(TEMPLATES, "getObject", id=template_id, mask=TEMPLATE_MASK))


def find_template(client: SoftLayer.BaseClient, name: str) -> TemplateInfo | None:
    """The account's image template called `name`, or None."""
    found = client.call(
        "SoftLayer_Account",
        "getBlockDeviceTemplateGroups",
        mask=TEMPLATE_MASK,
        filter={"blockDeviceTemplateGroups": {"name": {"operation": name}}},
    )
    return next((template_info(t) for t in found or [] if t["name"] == name), None)


def wait_for_template(
    client: SoftLayer.BaseClient, template_id: int, timeout: float, interval: float
) -> TemplateInfo:
    """Poll getObject (children) until no transaction is left; ImportFailed with the
    template's note unless it ends active."""
    last: dict[str, Any] = {}

    def state() -> str:
        last.clear()
        last.update(client.call(TEMPLATES, "getObject", id=template_id, mask=TEMPLATE_MASK))
        info = template_info(last)
        return "busy" if info.busy else info.status

    poll_until(
        state,
        frozenset({"ACTIVE"}),
        stop={
            s: (lambda s: ImportFailed(f"template {template_id}", f"{s}: {last.get('note', '')}"))
            for s in ("IMPORT_FAILED", "DEPRECATED", "DELETED")
        },
        timeout_seconds=timeout,
        interval_seconds=interval,
        what=f"image template {template_id}",
    )
    return template_info(last)


def check_source_template(client: SoftLayer.BaseClient, template_id: int) -> None:
    """The template exists and is an unencrypted active image (exports need both)."""
    info = get_template(client, template_id)
    if info.encrypted or info.status != "ACTIVE":
        raise InvalidRequest(
            "source_template_id",
            template_id,
            f"only active unencrypted templates can be exported (status {info.status}, "
            f"{'encrypted' if info.encrypted else 'unencrypted'})",
        )


def find_guest(client: SoftLayer.BaseClient, hostname: str, domain: str) -> int | None:
    """The id of the account's virtual server with this host name and domain, or None."""
    guests = client.call(
        "SoftLayer_Account",
        "getVirtualGuests",
        mask="id,hostname,domain",
        filter={"virtualGuests": {"hostname": {"operation": hostname}}},
    )
    return next(
        (int(g["id"]) for g in guests or [] if (g["hostname"], g["domain"]) == (hostname, domain)),
        None,
    )
