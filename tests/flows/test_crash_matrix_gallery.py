"""Crash matrix of the gallery image version flow: each write a clean run makes, failed around
in each way (answer lost once, 504 after the write, answer lost on every try), leaves no
duplicate, and every run completes on its own. Slow (a fresh set and source per scenario);
the lost answer of the version PUT is also in tests/flows/test_gallery.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clients.azure import AzureClients
from emulator.server import Emulator
from flows.gallery import ImageVersionRequest, publish_encrypted_image_version
from tests import crash
from tests.conftest import emulator_credentials
from tests.helpers import des_in_region, managed_image


def gallery_run(
    emulator: Emulator, reset: Callable[[], None], block: str
) -> tuple[Callable[[], None], Callable[[], object]]:
    """(fresh: reset the emulator and make the set and the source, run: the flow)."""
    group = (
        f"/subscriptions/{emulator.identity.subscription_id}/resourceGroups/rg-img/providers/"
        "Microsoft.Compute"
    )
    des, image = f"{group}/diskEncryptionSets/des-cm", f"{group}/images/src-image"
    request = ImageVersionRequest(
        azure_credentials_block=block,
        resource_group="rg-img",
        location="westeurope",
        gallery_name="gcm",
        image_name="img",
        version="1.0.0",
        source={"managed_image_id": image},
        target_regions=[{"name": "westeurope", "encryption": f"{des},0,{des}"}],
        poll_seconds=0.05,
        replication_timeout_minutes=0.5,
    )

    def fresh() -> None:
        reset()
        azure = AzureClients(emulator_credentials(emulator))
        assert des_in_region(azure, emulator, "westeurope", "des-cm") == des
        assert managed_image(azure, "westeurope", luns=(0,)) == image

    return fresh, lambda: publish_encrypted_image_version(request)


@pytest.mark.slow
def test_full_gallery_crash_matrix(
    azure_block: str, emulator: Emulator, reset_emulator: Callable[[], None]
) -> None:
    fresh, run = gallery_run(emulator, reset_emulator, azure_block)
    clean = crash.clean_run(emulator, fresh, run)
    assert len(clean.writes) == 3, clean.writes  # the gallery, the definition, the version
    outcomes = crash.matrix(emulator, fresh, run, clean, crash.FAILURES)
    print(f"\ngallery crash matrix: {crash.summary(outcomes)}\n{crash.report(outcomes)}")
    summary = crash.summary(outcomes)
    assert summary["duplicates"] == summary["not completed"] == 0, crash.report(outcomes)
    assert summary["needed a re-run"] == 0, crash.report(outcomes)
