"""A local VHD file as the source of the encrypted IBM image, the optional DEK key file
(0600, never otherwise on disk), temporary files removed on success and failure, and a scan
of the Prefect database file and the local result storage for the DEK."""

from __future__ import annotations

import base64
import io
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

from blocks.ibm import IBMCloudCredentials
from byok.ibm_dek_file import sidecar_path
from byok.ibm_models import WrappedDek
from byok.validation import InvalidRequest
from byok.vhd import keyhash, load_key, verify_vhd
from byok.vhd.format import Footer
from clients.ibm import IBMClients
from emulator.faults import Fault
from emulator.server import Emulator
from flows.ibm_image import provision_encrypted_ibm_image
from tasks.ibm_validation import validate_image_request
from tests import prefect_server
from tests.flows.test_ibm_image import (  # noqa: F401 (quick_softlayer: autouse fixture)
    BUCKET,
    OBJECT,
    dynamic_vhd,
    quick_softlayer,
    request,
    writes,
)

LOCAL = {"source_template_id": None, "order": None}


def fixed_vhd(data: bytes) -> bytes:
    """A fixed VHD holding `data` (its encryption is spooled to a temporary file)."""
    return data + Footer(2, len(data), len(data), creator_app=b"test").pack()


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory temporary files go to during the test."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def test_local_file_source_with_key_file(
    ibm_block: str, emulator: Emulator, ibm: IBMClients, tmp_path: Path, spool: Path
) -> None:
    data = os.urandom(9 << 20)
    source = tmp_path / "disk.vhd"
    source.write_bytes(dynamic_vhd(data))
    key_file = tmp_path / "keys" / "image.key"
    key_file.parent.mkdir()
    result = provision_encrypted_ibm_image(
        request(
            ibm_block,
            emulator,
            **LOCAL,
            source_file=str(source),
            dek_file=str(key_file),
            multipart_threshold_mb=5,
            part_size_mb=5,
        )
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    dek = load_key(key_file)
    assert len(dek) == 64 and keyhash(dek).hex() == result.keyhash
    # no temporary file left; the sidecar records the DEK wrapped (never in plaintext)
    assert sorted(p.name for p in key_file.parent.iterdir()) == [
        "image.key",
        "image.key.wrapped.json",
    ]
    sidecar = Path(sidecar_path(str(key_file)))
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert WrappedDek.model_validate_json(sidecar.read_bytes()).wrapped_dek == result.wrapped_dek
    assert dek not in sidecar.read_bytes() and base64.b64encode(dek) not in sidecar.read_bytes()
    stored = ibm.cos().get_object(Bucket=BUCKET, Key=OBJECT)["Body"].read()
    verify_vhd(io.BytesIO(source.read_bytes()), io.BytesIO(stored), dek)
    assert emulator.state is not None
    assert emulator.state.softlayer.templates[result.template_id].status == "ACTIVE"
    assert list(spool.iterdir()) == []
    # a re-run keeps the key file (same DEK) and reuses the upload
    again = provision_encrypted_ibm_image(
        request(ibm_block, emulator, **LOCAL, source_file=str(source), dek_file=str(key_file))
    )
    assert again.template_id == result.template_id and load_key(key_file) == dek


def test_fixed_local_file_spools_cleans_up_and_a_rerun_reuses_the_written_dek(
    ibm_block: str,
    emulator: Emulator,
    ibm: IBMClients,
    ibm_credentials: IBMCloudCredentials,
    tmp_path: Path,
    spool: Path,
) -> None:
    source = tmp_path / "fixed.vhd"
    source.write_bytes(fixed_vhd(os.urandom(6 << 20)))
    emulator.faults.add(
        Fault("status", "PUT", rf"^/{BUCKET}/{OBJECT}$", status=400, code="InjectedCrash")
    )
    key_file = tmp_path / "image.key"
    args: dict[str, Any] = {**LOCAL, "source_file": str(source), "dek_file": str(key_file)}
    with pytest.raises(Exception, match="InjectedCrash"):
        provision_encrypted_ibm_image(request(ibm_block, emulator, **args))
    assert list(spool.iterdir()) == []
    s3 = ibm.cos()
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    # the key file of the failed run holds a DEK no stored image uses yet: the re-run finds it
    # wrapped in the sidecar, unwraps it and encrypts with it (the file is never rewritten)
    written = load_key(key_file)
    result = provision_encrypted_ibm_image(request(ibm_block, emulator, **args))
    assert load_key(key_file) == written and keyhash(written).hex() == result.keyhash
    assert list(spool.iterdir()) == []
    # a key file holding another key (its sidecar gone) is refused, never overwritten
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(64))
    with pytest.raises(InvalidRequest, match="does not hold this image's DEK"):
        validate_image_request.fn(
            ibm_credentials,
            request(ibm_block, emulator, **{**args, "dek_file": str(other), "image_name": "x2"}),
        )


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "source_file = '{path}': cannot read the file"),
        ("not a vhd", "source_file = '{path}': the file is not a VHD"),
        ("key dir", "dek_file = '{key}': no such directory"),
    ],
)
def test_local_source_rules(
    ibm_block: str,
    emulator: Emulator,
    ibm_credentials: IBMCloudCredentials,
    tmp_path: Path,
    case: str,
    match: str,
) -> None:
    path, key = tmp_path / "disk.vhd", tmp_path / "none" / "k.key"
    if case == "not a vhd":
        path.write_bytes(b"not a disk\n" * 100)
    elif case == "key dir":
        path.write_bytes(dynamic_vhd(os.urandom(1 << 20)))
    emulator.requests.clear()
    overrides = {**LOCAL, "source_file": str(path)}
    if case == "key dir":
        overrides["dek_file"] = str(key)
    with pytest.raises(InvalidRequest, match=re.escape(match.format(path=path, key=key))):
        validate_image_request.fn(ibm_credentials, request(ibm_block, emulator, **overrides))
    assert writes(emulator) == []


def test_no_dek_in_the_prefect_database_or_result_storage(
    ibm_block: str, emulator: Emulator, tmp_path: Path
) -> None:
    source = tmp_path / "disk.vhd"
    source.write_bytes(dynamic_vhd(os.urandom(2 << 20)))
    key_file = tmp_path / "image.key"
    result = provision_encrypted_ibm_image(
        request(ibm_block, emulator, **LOCAL, source_file=str(source), dek_file=str(key_file))
    )
    dek = load_key(key_file)
    assert keyhash(dek).hex() == result.keyhash
    files = prefect_server.stored(prefect_server.home())  # type: ignore[arg-type]
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    if storage.exists():
        files |= {str(p): p.read_bytes() for p in storage.rglob("*") if p.is_file()}
    secrets = [dek, dek.hex().encode(), dek.hex().upper().encode(), base64.b64encode(dek)]
    assert sum(len(content) for content in files.values()) > 0
    for where, content in files.items():
        assert not [s for s in secrets if s in content], where
    # the scan looks at live data: the run of the key file's task is recorded there
    assert any(b"Write the DEK key file" in content for content in files.values())
