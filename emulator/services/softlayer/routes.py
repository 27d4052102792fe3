"""The SoftLayer REST API: `/rest/v3.1/<Service>[/<id>]/<method>.json`, HTTP Basic auth with
user `apikey` and an IBM Cloud API key of the account; arguments POSTed as
{"parameters": [...]}."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from emulator.http import Request, Response, Router
from emulator.ibm_accounts import IbmAccounts
from emulator.services.softlayer.models import (
    SoftLayerError,
    SoftLayerModel,
    datacenters,
    software_descriptions,
)

TEMPLATES = "SoftLayer_Virtual_Guest_Block_Device_Template_Group"
GUESTS = "SoftLayer_Virtual_Guest"
Method = Callable[[SoftLayerModel, str | None, list[Any], str], Any]


def register(router: Router, accounts: IbmAccounts) -> None:
    """Add the SoftLayer routes: each call acts in its API key's account."""

    def param(params: list[Any], index: int, name: str) -> Any:
        if len(params) <= index:
            raise SoftLayerError(
                400, "SoftLayer_Exception_Public", f"parameter {index} ({name}) is required."
            )
        return params[index]

    def template_get(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        return sl.template(oid).to_json(mask)

    def create_from_icos(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        return sl.create_from_icos(param(params, 0, "configuration")).to_json(mask)

    def copy_to_icos(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        return sl.copy_to_icos(oid, param(params, 0, "configuration"))

    def account_templates(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        with sl.lock:
            ids = list(sl.templates)
        return [sl.template(i).to_json(mask) for i in ids]

    def account_guests(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        with sl.lock:
            guests = list(sl.guests.values())
        return [g.to_json() for g in guests]

    def guest_create(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        return sl.create_guest(param(params, 0, "templateObject")).to_json()

    def guest_get(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        return sl.guest(oid).to_json()

    def order_template(sl: SoftLayerModel, oid: str | None, params: list[Any], mask: str) -> Any:
        order = sl.validate_order(param(params, 0, "templateObject"))
        group = order.get("blockDeviceTemplateGroup") or {}
        return {
            "complexType": "SoftLayer_Container_Product_Order_Virtual_Guest",
            "location": order["datacenter"]["name"],
            "quantity": 1,
            "useHourlyPricing": order["hourlyBillingFlag"],
            "imageTemplateGlobalIdentifier": group.get("globalIdentifier"),
            "virtualGuests": [{"hostname": order["hostname"], "domain": order["domain"]}],
            "prices": [
                {"item": {"description": f"{order['startCpus']} x 2.0 GHz or higher Cores"}},
                {"item": {"description": f"{order['maxMemory'] // 1024} GB RAM"}},
            ],
        }

    methods: dict[tuple[str, str], Method] = {
        (TEMPLATES, "getObject"): template_get,
        (TEMPLATES, "createFromIcos"): create_from_icos,
        (TEMPLATES, "copyToIcos"): copy_to_icos,
        (TEMPLATES, "getVhdImportSoftwareDescriptions"): lambda *_: software_descriptions(),
        ("SoftLayer_Location", "getDatacenters"): lambda *_: datacenters(),
        ("SoftLayer_Account", "getBlockDeviceTemplateGroups"): account_templates,
        ("SoftLayer_Account", "getVirtualGuests"): account_guests,
        (GUESTS, "createObject"): guest_create,
        (GUESTS, "getObject"): guest_get,
        (GUESTS, "generateOrderTemplate"): order_template,
    }

    def serve(request: Request) -> Response:
        sl = authenticate(request.headers.get("authorization", ""))
        service, name = request.params["service"], request.params["method"]
        handler = methods.get((service, name.removesuffix(".json")))
        if handler is None:
            raise SoftLayerError(
                404,
                "SoftLayer_Exception_Public",
                f'Function ("{name}") is not a valid method for service {service} in the emulator.',
            )
        params = request.json().get("parameters", []) if request.body else []
        if not isinstance(params, list):
            raise SoftLayerError(
                400, "SoftLayer_Exception_Public", f"parameters {params!r} must be a list."
            )
        return Response(
            200,
            handler(sl, request.params.get("id"), params, request.query.get("objectMask", "")),
        )

    def authenticate(header: str) -> SoftLayerModel:
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        account = accounts.by_api_key(password) if password else None
        if scheme.lower() != "basic" or user != "apikey" or account is None:
            raise SoftLayerError(
                401,
                "SoftLayer_Exception_Public",
                "Access Denied. Use HTTP Basic auth with user 'apikey' and an IBM Cloud API key.",
            )
        return account.softlayer

    for version in ("v3", "v3.1"):
        for template in ("/{service}/{method}", "/{service}/{id}/{method}"):
            for method in ("GET", "POST", "PUT"):
                router.add(method, f"/rest/{version}" + template, serve)
