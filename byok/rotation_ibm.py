"""The IBM Cloud part of a fleet rotation: which Key Protect root keys of the accounts read
rotate, and what each of their images must do. A classic image (an object in COS with the
byok metadata) holds a DEK wrapped by the root key: it is rewrapped under the new version
and the result recorded with the object. A VPC image is registered with the key: VPC
re-wraps it itself, the run verifies the registrations report the new version.

Key Protect allows one rotation per hour per key
(https://cloud.ibm.com/docs/key-protect?topic=key-protect-rotate-keys): a key rotated within
the hour is skipped with that reason. A run is resumable: a key whose classic images are
behind its latest version (a run that rotated and stopped) is not rotated again, its images
are rewrapped to the version it has (images already on it are only checked). Key Protect
keys carry no tags, so the rotation's day stands for its id: a key last rotated on or after
the day the rotation is scheduled for (UTC) was rotated by it, and a re-run that day or later
(a retry of a scheduled run keeps its date) finishes and verifies, never rotates again
(`byok.ibm_vpc.rotated_since`, the rule rotate-vpc-root-key keeps too). `tags` selects Azure
keys only."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from byok.ibm_vpc import rotated_since
from byok.inventory.ibm import CosImage, IbmAccountSnapshot, key_protect_id
from byok.inventory.request import IbmAccountScope
from byok.rotation import FleetRotationRequest, KeyFacts, RotationRow, Status, due_reason

ROTATION_INTERVAL = timedelta(hours=1)
ACTIVE = 1  # Key Protect's key state: Active


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


class IbmPlannedKey(BaseModel):
    """A root key to rotate (or whose rotation to finish), and its images."""

    ibm_credentials_block: str
    cos_instance_id: str | None
    region: str
    instance_id: str = Field(description="The Key Protect instance GUID.")
    key_id: str
    crn: str
    version: str = Field(description="The key's latest version id now.")
    rotate: bool = Field(description="False: finish rewrapping to `version`.")
    reason: str
    images: list[CosImage] = Field(default_factory=list, description="Classic: rewrap.")
    vpc_images: list[str] = Field(default_factory=list, description="Registered image CRNs.")
    material_block: str | None = Field(
        None, description="An imported key's new material (a Secret block), to rotate it."
    )

    def rows(self, status: Status) -> list[RotationRow]:
        """The key's row and one per image, all with `status`."""
        action = "rotate" if self.rotate else f"finish rewrap to {self.version}"
        rows = [RotationRow(key_id=self.crn, action=action, status=status, reason=self.reason)]
        rows += [
            RotationRow(
                key_id=self.crn,
                dependent_id=i.uri(self.region),
                kind="ibm-image",
                action="rewrap, record",
                status=status,
            )
            for i in self.images
        ]
        rows += [
            RotationRow(
                key_id=self.crn,
                dependent_id=crn,
                kind="ibm-vpc-image",
                action="verify re-wrap",
                status=status,
            )
            for crn in self.vpc_images
        ]
        return rows


class IbmRotationPlan(BaseModel):
    """The root keys to rotate and the rows of those left alone."""

    rotations: list[IbmPlannedKey] = Field(default_factory=list)
    skipped: list[RotationRow] = Field(default_factory=list)

    def rows(self) -> list[RotationRow]:
        """The plan as rows (what plan_only reports)."""
        return list(self.skipped) + [r for k in self.rotations for r in k.rows(Status.PLANNED)]


def plan_ibm(
    accounts: list[tuple[IbmAccountScope, IbmAccountSnapshot]],
    request: FleetRotationRequest,
    now: datetime,
    since: datetime | None = None,
) -> IbmRotationPlan:
    """The root keys the selection names (or every one protecting an image), each rotated,
    finished (images behind its latest version, or rotated `since` the rotation's day
    began), or a skipped row with the reason."""
    wanted = {key_protect_id(k) for k in request.root_keys}
    plan = IbmRotationPlan()
    for scope, snapshot in accounts:
        for key in snapshot.root_keys:
            images = [i for i in snapshot.cos_images if i.root_key_crn == key["crn"]]
            registered = snapshot.registrations.get(key["id"]) or []
            vpc = [r["resourceCrn"] for r in registered if ":image:" in r["resourceCrn"]]
            if (wanted and key["id"].lower() not in wanted) or not (wanted or images or vpc):
                continue
            planned = _plan_key(scope, snapshot.region, key, images, vpc, request, now, since)
            if isinstance(planned, RotationRow):
                plan.skipped.append(planned)
            else:
                plan.rotations.append(planned)
    return plan


def _plan_key(
    scope: IbmAccountScope,
    region: str,
    key: dict,
    images: list[CosImage],
    vpc: list[str],
    request: FleetRotationRequest,
    now: datetime,
    since: datetime | None,
) -> IbmPlannedKey | RotationRow:
    crn, version = key["crn"], (key.get("keyVersion") or {}).get("id", "")
    skip = RotationRow(key_id=crn, action="none", status=Status.SKIPPED, reason="")
    if key.get("state", ACTIVE) != ACTIVE:
        return skip.model_copy(update={"reason": "the key is not active"})
    behind = [i for i in images if i.key_version != version]
    last = _time(key.get("lastRotateDate"))
    if behind:
        rotate, reason = False, f"finishing: {len(behind)} wrapped DEK(s) behind version {version}"
    elif (done := rotated_since(key.get("lastRotateDate"), since)) is not None:
        rotate, reason = False, f"resuming: rotated at {done.isoformat()} by this rotation"
    else:
        facts = KeyFacts(
            key_id=crn,
            latest=version,
            created=_time((key.get("keyVersion") or {}).get("creationDate")),
            expires=_time(key.get("expirationDate")),
        )
        due = due_reason(facts, request, now)
        if due is None:
            return skip.model_copy(update={"reason": "not old enough, nor near expiry"})
        if last is not None and now - last < ROTATION_INTERVAL:
            return skip.model_copy(
                update={
                    "reason": f"rotated at {last.isoformat()}: Key Protect allows one "
                    "rotation per hour"
                }
            )
        rotate, reason = True, due
    material = request.root_key_material_blocks.get(key["id"].lower())
    if rotate and key.get("imported") and material is None:
        return skip.model_copy(
            update={
                "status": Status.FAILED,
                "reason": "an imported root key: Key Protect rotates it only with new material; "
                "name a Secret block holding it in root_key_material_blocks",
            }
        )
    return IbmPlannedKey(
        ibm_credentials_block=scope.ibm_credentials_block,
        cos_instance_id=scope.cos_instance_id,
        region=region,
        instance_id=key["instanceCrn"].rsplit(":", 1)[-1],
        key_id=key["id"],
        crn=crn,
        version=version,
        rotate=rotate,
        reason=reason,
        images=images,
        vpc_images=vpc,
        material_block=material if rotate else None,
    )
