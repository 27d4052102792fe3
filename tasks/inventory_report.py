"""Where the inventory's files go: a local directory or a COS (S3-compatible) bucket. Either
holds `inventory.csv`, `inventory.json`, `inventory-oscal.json` and `history/<time>.json`;
the previous run's `inventory.json` is read first, to report what changed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ibm_botocore.exceptions import ClientError
from prefect import task

from blocks.ibm import IBMCloudCredentials
from byok.errors import InvalidRequest
from byok.inventory import report
from byok.inventory.models import EvidenceRow
from byok.inventory.oscal import assessment_results, to_oscal_json
from byok.inventory.request import ReportBucket
from byok.inventory.said import counted
from clients.ibm import IBMClients
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import report as report_outcome
from tasks.retry import STEP_RETRIES, is_transient

LATEST = "inventory.json"
PROBE = ".byok-write-check"  # written and deleted to prove the bucket takes writes


class _Destination(Protocol):
    def read(self, name: str) -> str | None: ...

    def write(self, name: str, text: str) -> str: ...


class _Folder:
    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()

    def read(self, name: str) -> str | None:
        file = self.path / name
        return file.read_text() if file.exists() else None

    def write(self, name: str, text: str) -> str:
        file = self.path / name
        file.parent.mkdir(exist_ok=True)
        file.write_text(text)
        return str(file)


class _Bucket:
    def __init__(self, credentials: IBMCloudCredentials, target: ReportBucket) -> None:
        self.s3 = IBMClients.of(credentials).cos(target.cos_instance_id)
        self.bucket, self.prefix, self.region = target.bucket, target.prefix, credentials.region

    def read(self, name: str) -> str | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return body.read().decode()

    def write(self, name: str, text: str) -> str:
        key = self.prefix + name
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode())
        return f"cos://{self.region}/{self.bucket}/{key}"


@task(name="Check the report bucket", **STEP_RETRIES)
def check_report_bucket(credentials: IBMCloudCredentials, target: ReportBucket) -> None:
    """The bucket exists and takes writes (a probe object written and deleted), or
    InvalidRequest naming it, before any discovery."""
    bucket = _Bucket(credentials, target)
    try:
        bucket.s3.head_bucket(Bucket=target.bucket)
        bucket.s3.put_object(Bucket=target.bucket, Key=target.prefix + PROBE, Body=b"")
        bucket.s3.delete_object(Bucket=target.bucket, Key=target.prefix + PROBE)
    except ClientError as exc:
        if is_transient(exc):
            raise
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        rule = (
            "no such bucket"
            if status == 404
            else f"the credentials of {target.ibm_credentials_block!r} cannot write to it "
            f"({exc.response.get('Error', {}).get('Code', status)})"
        )
        raise InvalidRequest("report_bucket.bucket", target.bucket, rule) from None
    report_outcome(_where(target), "verify", note="takes writes")


@task(name="Write the report files", **STEP_RETRIES, **IN_MEMORY)
def write_report_files(
    evidence: list[EvidenceRow],
    started: datetime,
    report_dir: str | None = None,
    bucket: tuple[IBMCloudCredentials, ReportBucket] | None = None,
) -> tuple[list[str], list[report.Change]]:
    """CSV, JSON and OSCAL in the directory or bucket, and this run's rows kept in its
    history; the changes since the previous run's rows. Neither: nothing written."""
    destination: _Destination
    if report_dir is not None:
        destination, where, verb = _Folder(report_dir), report_dir, "write"
    elif bucket is not None:
        destination, where, verb = _Bucket(*bucket), _where(bucket[1]), "upload"
    else:
        return [], []
    previous_text = destination.read(LATEST)
    previous = report.from_json(previous_text) if previous_text else []
    document = assessment_results(
        evidence, title="Customer-managed key inventory", start=started, end=datetime.now(UTC)
    )
    rows = report.to_json(evidence)
    texts: dict[str, Any] = {
        "inventory.csv": report.to_csv(evidence),
        LATEST: rows,
        "inventory-oscal.json": to_oscal_json(document),
        f"history/{started.strftime('%Y%m%dT%H%M%SZ')}.json": rows,
    }
    written = [destination.write(name, text) for name, text in texts.items()]
    names = ", ".join(texts)
    report_outcome(where, verb, note=f"{counted(len(written), 'file')}: {names}")
    return written, report.changes(previous, evidence)


def _where(target: ReportBucket) -> str:
    return f"cos bucket {target.bucket}/{target.prefix}"
