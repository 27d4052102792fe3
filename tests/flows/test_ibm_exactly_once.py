"""Exactly-once writes in the IBM image flow: every write step losing its answer (dropped
before or after the write, or a 504 after it) still ends with one of each resource in one run;
the single-use import key never outlives the run's import (failed, or crashed around it); two
runs of one request at once make one image, and a run refused by another's lock says why and
writes nothing."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

import pytest

from blocks.ibm import IBMCloudCredentials
from byok.errors import ConcurrentRun
from byok.ibm_models import lock_ids
from clients.ibm import IBMClients
from clients.softlayer_templates import ImportFailed
from emulator.faults import Fault
from emulator.server import Emulator
from flows.ibm_image import provision_encrypted_ibm_image
from tasks.run_lock import resource_lock
from tests import crash
from tests.flows.test_ibm_image import (
    BUCKET,
    EXPECTED,
    IMAGE,
    OBJECT,
    SEED_TEMPLATE_ID,
    quick_softlayer,  # noqa: F401 (autouse fixture)
    request,
    state_counts,
    writes,
)

# Every write of the flow, in its order (the three IAM policies are three POSTs).
WRITE_STEPS = [
    ("root key", "POST", r"^/api/v2/keys$"),
    ("wrap", "POST", r"/actions/wrap$"),
    ("authorization", "POST", r"^/v1/policies$"),
    ("bucket", "PUT", rf"^/{BUCKET}/?$"),
    ("export", "POST", r"/copyToIcos"),
    ("upload", "PUT", rf"^/{BUCKET}/{OBJECT}$"),
    ("service id", "POST", r"^/v1/serviceids/?$"),
    ("bucket policy", "POST", r"^/v1/policies$"),
    ("kms policy", "POST", r"^/v1/policies$"),
    ("api key", "POST", r"^/v1/apikeys/?$"),
    ("import", "POST", r"/createFromIcos"),
    ("key cleanup", "DELETE", r"^/v1/apikeys/"),
    ("order", "POST", r"Virtual_Guest/createObject"),
]
KINDS = {
    "reset": {"kind": "reset"},  # the request lost before it was served
    "reset-after": {"kind": "reset-after"},  # served, the answer lost
    "504-after": {"kind": "status-after", "status": 504},  # served, a gateway's 504 instead
}


def import_keys(emulator: Emulator) -> list[str]:
    """The API keys of every service ID of the account (only the import's exists here)."""
    assert emulator.state is not None
    iam = emulator.state.iam
    service_iam_ids = {s.iam_id for s in iam.service_ids.values()}
    return [k.name for k in iam.api_keys.values() if k.iam_id in service_iam_ids]


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.slow if k == "reset" else ()) for k in KINDS]
)
def test_every_write_losing_its_answer_still_makes_one_of_each(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, kind: str
) -> None:
    faults = [
        emulator.faults.add(Fault(method=method, path=path, **KINDS[kind]))  # type: ignore[arg-type]
        for _, method, path in WRITE_STEPS
    ]
    result = provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert {step: f.fired for (step, *_), f in zip(WRITE_STEPS, faults, strict=True)} == {
        step: 1 for step, *_ in WRITE_STEPS
    }
    assert state_counts(emulator, ibm) == EXPECTED  # no duplicate, no import key left
    assert emulator.state is not None
    assert emulator.state.softlayer.templates[result.template_id].status == "ACTIVE"


def test_the_import_key_is_retired_when_the_import_fails(
    ibm_block: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert emulator.state is not None
    monkeypatch.setattr(
        emulator.state.softlayer, "_import_error", lambda config: "the VHD is unreadable"
    )
    with pytest.raises(ImportFailed, match="the VHD is unreadable"):
        provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert len(emulator.state.iam.service_ids) == 1 and import_keys(emulator) == []


# A crash (a refused request) at each step around the import key; what is left after it.
AROUND_THE_KEY = [
    ("api key", "POST", r"^/v1/apikeys/?$"),
    ("import", "POST", r"/createFromIcos"),
    ("key cleanup", "DELETE", r"^/v1/apikeys/"),
    ("import wait", "GET", rf"Template_Group/(?!{SEED_TEMPLATE_ID})\d+/getObject"),
]


def test_no_import_key_survives_a_crash_around_it(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    left: dict[str, list[str]] = {}
    for step, method, path in AROUND_THE_KEY:
        emulator.faults.add(
            Fault("status", method=method, path=path, status=400, code="InjectedCrash")
        )
        with pytest.raises(Exception, match="InjectedCrash"):
            provision_encrypted_ibm_image(request(ibm_block, emulator))
        left[step] = import_keys(emulator)
    # only the failed DELETE itself leaves the key; the next run retires it even when that
    # run crashes too (its wait, after the import ended)
    assert left["api key"] == left["import"] == left["import wait"] == []
    assert left["key cleanup"] == [f"{IMAGE}-import"]
    provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert import_keys(emulator) == []
    assert state_counts(emulator, ibm) == EXPECTED


@pytest.mark.slow
def test_the_key_is_kept_while_its_import_still_runs(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    """A run whose wait crashed while the import still reads the image with the key keeps
    it (deleting it would fail the import); the re-run retires it once the import ended."""
    assert emulator.state is not None
    emulator.state.softlayer.import_seconds = 3.0
    wait = rf"Template_Group/(?!{SEED_TEMPLATE_ID})\d+/getObject"
    emulator.faults.add(Fault("status", "GET", wait, status=400, code="InjectedCrash"))
    with pytest.raises(Exception, match="InjectedCrash"):
        provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert import_keys(emulator) == [f"{IMAGE}-import"]
    provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert import_keys(emulator) == [] and state_counts(emulator, ibm) == EXPECTED


def test_a_run_fails_fast_while_another_holds_the_image(
    ibm_block: str,
    emulator: Emulator,
    ibm_credentials: IBMCloudCredentials,
) -> None:
    held = lock_ids(
        ibm_credentials.account_id, ibm_credentials.region, request(ibm_block, emulator)
    )[0]
    with (
        resource_lock(held, wait=True),
        pytest.raises(ConcurrentRun, match=f"{re.escape(held)}: another run is working on"),
    ):
        provision_encrypted_ibm_image(request(ibm_block, emulator))
    assert writes(emulator) == []


def test_two_runs_of_one_request_at_once_make_one_image(
    ibm_block: str, emulator: Emulator, ibm: IBMClients
) -> None:
    """Both wait for the other (`wait_for_other_run`): the second reuses what the first made,
    no keyhash mismatch, no second template or import key."""
    outcome: dict[int, Any] = {}

    def run(number: int) -> None:
        try:
            outcome[number] = provision_encrypted_ibm_image(
                request(ibm_block, emulator, wait_for_other_run=True)
            )
        except Exception as exc:  # reported by the assertion below
            outcome[number] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not [o for o in outcome.values() if isinstance(o, Exception)], outcome
    assert outcome[1].template_id == outcome[2].template_id
    assert state_counts(emulator, ibm) == EXPECTED


# -- the crash matrix (tests/crash.py): every write of a clean run x each way to fail around it,
# each from a fresh state; the paths' generated ids (keys, API keys, templates) generalised so
# that a fault armed from the clean run's write matches the same write of a later run.
GENERATED_ID = re.compile(r"(?<=/)(?:[0-9a-f]{8}-[0-9a-f-]{27}|ApiKey-[0-9a-f-]{36}|\d{5,})(?=/|$)")


def any_id(write: crash.Write) -> str:
    """The write's path as a pattern, each generated id matching any id."""
    parts = GENERATED_ID.split(write.path)
    return "^" + "[^/]+".join(re.escape(p) for p in parts) + "$"


def around(kind: str, **options: Any) -> Any:
    return lambda w: Fault(kind, method=w.method, path=any_id(w), **options)  # type: ignore[arg-type]


IBM_FAILURES = {
    "lost-once": around("reset-after"),
    "504-after": around("status-after", status=504),
    "lost-always": around("reset-after", count=None),
}


@pytest.mark.slow
def test_ibm_crash_matrix(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(IBMClients, "max_retry_interval", 0.5)  # the clients' backoff cap

    def fresh() -> None:
        emulator.reset()
        assert emulator.state is not None
        softlayer = emulator.state.softlayer
        softlayer.import_seconds = softlayer.export_seconds = softlayer.provision_seconds = 0.05

    def run() -> object:
        return provision_encrypted_ibm_image(request(ibm_block, emulator))

    def counts(_: Emulator) -> Counter[str]:
        return Counter(state_counts(emulator, ibm))

    clean = crash.clean_run(emulator, fresh, run, counts)
    assert len(clean.writes) >= 12 and dict(clean.counts) == EXPECTED
    outcomes = crash.matrix(emulator, fresh, run, clean, IBM_FAILURES, counts=counts)
    summary = crash.summary(outcomes)
    print(f"\nIBM crash matrix: {summary}\n{crash.report(outcomes)}")
    assert summary["duplicates"] == summary["not completed"] == 0, crash.report(outcomes)
    once = [o for o in outcomes if o.failure != "lost-always" and o.reruns]
    assert not once, crash.report(once)
