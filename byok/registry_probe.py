"""Does a registry still use its key? A registry data operation answers (no Prefect import):
the registry step of the revoke-and-restore flow and the revocation drill share it."""

from __future__ import annotations

from collections.abc import Callable

from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerregistry.models import ImportImageParameters, ImportSource
from azure.mgmt.containerregistry.operations import RegistriesOperations
from azure.mgmt.core.tools import parse_resource_id

from byok.azure_errors import error_code, is_propagation_delay
from byok.errors import VerificationFailed
from byok.retrying import retry_while

PROBE_SOURCE = ("mcr.microsoft.com", "hello-world:latest")
PROBE_TAG = "byok-probe:latest"
KEY_FORBIDDEN = "KeyVaultAccessForbidden"


def probe_registry_data(
    registries: RegistriesOperations,
    registry_id: str,
    expect_access: bool,
    timeout_seconds: float,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> str:
    """Import a small image (a registry data operation, which needs the key). Expecting
    access: retried while a restored grant propagates, 'ok'. Expecting no access: it must fail
    with KeyVaultAccessForbidden, returned; VerificationFailed if it succeeds."""
    where = parse_resource_id(registry_id)
    params = ImportImageParameters(
        source=ImportSource(registry_uri=PROBE_SOURCE[0], source_image=PROBE_SOURCE[1]),
        target_tags=[PROBE_TAG],
        mode="Force",
    )

    def probe() -> None:
        group, name = str(where["resource_group"]), str(where["name"])
        registries.begin_import_image(group, name, params).result()

    if expect_access:
        retry_while(
            probe,
            is_propagation_delay,
            timeout_seconds=timeout_seconds,
            first_delay=1,
            on_retry=on_retry,
        )
        return "ok"
    try:
        probe()
    except HttpResponseError as exc:
        if error_code(exc) != KEY_FORBIDDEN:
            raise
        return KEY_FORBIDDEN
    raise VerificationFailed(
        registry_id, "the registry still uses its key after the access was revoked"
    )
