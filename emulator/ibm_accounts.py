"""IBM Cloud state keyed by account and region, as moto keys its backends: per account its
IAM (identities, API keys, policies), its classic infrastructure (SoftLayer) and its Key
Protect instances (each in a region); per account and region its VPC. A request's account is
its IAM token's (`account.bss`) or, for SoftLayer, its API key's; its region is the host's
when the host names one (`eu-de.kms.cloud.ibm.com`, `us-south.iaas.cloud.ibm.com`), else
the account's own. One account never sees another's keys, images or policies. In COS each
account's HMAC key lists and owns its own buckets, whose names stay global as IBM COS's are
(https://cloud.ibm.com/docs/cloud-object-storage?topic=cloud-object-storage-compatibility-api-bucket-operations)."""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field

from emulator.clock import Clock
from emulator.cos import CosServer
from emulator.faults import FaultInjector
from emulator.http import Request
from emulator.services.ibm_iam.models import (
    AuthenticationError,
    Caller,
    IamModel,
    IbmIdentity,
    authenticate,
)
from emulator.services.keyprotect.models import KeyProtectModel
from emulator.services.softlayer.models import SoftLayerModel
from emulator.services.vpc.models import VpcModel

# A regional IBM Cloud host starts with its region: us-south, eu-de, jp-tok, au-syd, ca-tor...
_REGIONAL_HOST = re.compile(r"(?P<region>[a-z]{2}-[a-z]{2,5})\.", re.IGNORECASE)


def region_of(request: Request, default: str) -> str:
    """The region a request's host names, else `default`."""
    match = _REGIONAL_HOST.match(request.host or "")
    return match["region"].lower() if match else default


def new_identity(region: str = "us-south") -> IbmIdentity:
    """The identifiers and secrets of another account (random, unique)."""
    tag = uuid.uuid4().hex
    return IbmIdentity(
        account_id=tag,
        user_iam_id=f"IBMid-{tag[:10].upper()}",
        user_name=f"byok-user-{tag[:8]}@emulator.example",
        api_key=f"emulator-ibm-api-key-{uuid.uuid4().hex}",
        region=region,
        key_protect_instance=str(uuid.uuid4()),
        cos_instance=str(uuid.uuid4()),
        cos_hmac_access_key_id=f"emulatorhmac{uuid.uuid4().hex[:20]}",
        cos_hmac_secret_access_key=f"emulator-cos-hmac-{uuid.uuid4().hex}",
    )


@dataclass
class IbmAccount:
    """One account's models; `vpcs` by region."""

    identity: IbmIdentity
    iam: IamModel
    keyprotect: KeyProtectModel
    softlayer: SoftLayerModel
    vpcs: dict[str, VpcModel] = field(default_factory=dict)


class IbmAccounts:
    """Every IBM account of the emulator, by account id."""

    def __init__(
        self, faults: FaultInjector, clock: Clock, cos: CosServer | None, base_url: str
    ) -> None:
        self.faults, self.clock, self.cos, self.base_url = faults, clock, cos, base_url
        self.lock = threading.RLock()
        self.accounts: dict[str, IbmAccount] = {}

    def add(self, identity: IbmIdentity) -> IbmAccount:
        """A new account with its user, its API key and a Key Protect instance in its
        region."""
        iam = IamModel(identity, self.faults)
        keyprotect = KeyProtectModel(iam, identity.region, identity.key_protect_instance)
        keyprotect.clock = self.clock
        account = IbmAccount(identity, iam, keyprotect, SoftLayerModel(iam, keyprotect, self.cos))
        with self.lock:
            self.accounts[identity.account_id] = account
        if self.cos is not None:
            self.cos.add_account(identity.cos_hmac_access_key_id)
        return account

    def caller(self, authorization: str | None) -> tuple[Caller, IbmAccount]:
        """The caller behind an IAM bearer token, and its account."""
        caller = authenticate(authorization)
        with self.lock:
            account = self.accounts.get(caller.account_id)
        if account is None:
            raise AuthenticationError(f"account {caller.account_id!r} does not exist")
        return caller, account

    def by_api_key(self, value: str) -> IbmAccount | None:
        """The account holding an API key with this secret value."""
        with self.lock:
            accounts = list(self.accounts.values())
        return next((a for a in accounts if a.iam.key_by_value(value)), None)

    def issuer(self, api_key: str) -> IamModel:
        """The IAM that answers a token request for `api_key`: its account's, or the first
        account's for an unknown key (which it refuses)."""
        with self.lock:
            first = next(iter(self.accounts.values()))
        account = self.by_api_key(api_key) if api_key else None
        return (account or first).iam

    def vpc(self, account: IbmAccount, region: str) -> VpcModel:
        """The account's VPC in `region` (made on first use)."""
        with self.lock:
            found = account.vpcs.get(region)
            if found is None:
                found = account.vpcs[region] = VpcModel(
                    account.iam, account.keyprotect, self.cos, self.base_url + "/v1", region
                )
            return found
