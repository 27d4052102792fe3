"""The emulator: one WSGI application (`emulator.app`) served by werkzeug on loopback ports,
one per origin: the main origin over HTTPS (Entra, ARM, admin API, IBM IAM, Key Protect,
SoftLayer), one HTTPS origin per Key Vault, and COS over plain HTTP (as the IBM clients
reach it)."""

from __future__ import annotations

import secrets
import tempfile
import threading
from pathlib import Path

from emulator.app import Application
from emulator.clock import clock_admin
from emulator.cos import CosServer
from emulator.faults import Fault, FaultInjector
from emulator.http import HttpError, Request, Response
from emulator.ibm_accounts import new_identity
from emulator.requestlog import RequestLog
from emulator.services.arm.models import ArmModel
from emulator.services.ibm_iam.models import IbmIdentity
from emulator.services.keyvault.throttling import VaultThrottle
from emulator.serving import Listener
from emulator.state import EmulatorState, Identity
from emulator.throttling import Limits, Throttle
from emulator.tls import TlsFiles, make_tls_files


def _close(listener: Listener) -> None:
    listener.shutdown()
    listener.server_close()


class Emulator:
    """The local cloud: start it, point clients at `base_url` trusting `ca_path`, reset it
    between tests, stop it at the end. Throttling (ARM's, Compute's and Key Vault's) is off
    unless `throttle` gives ARM's limits (or a test sets `emulator.throttle` until the next
    reset)."""

    def __init__(
        self,
        port: int = 0,
        state_dir: Path | None = None,
        identity: Identity | None = None,
        throttle: Limits | None = None,
        subscriptions: int = 1,
        ibm_accounts: int = 1,
    ) -> None:
        self.identity = identity or Identity()
        self.subscriptions = subscriptions  # of the home tenant, made again on every reset
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="byok-emulator-")
        self.state_dir = Path(state_dir or self._tmp.name)  # type: ignore[union-attr]
        self.tls: TlsFiles = make_tls_files(self.state_dir / "tls")
        self.ssl_context = self.tls.server_context()
        self.requests = RequestLog()
        self.limits = throttle
        self.state: EmulatorState | None = None
        self._throttle: Throttle | None = None
        self._port = port
        self._listeners: dict[int, Listener] = {}
        self._vault_ports: set[int] = set()  # every port a vault was ever served on
        self._lock = threading.Lock()
        self.base_url = ""
        self.ibm_identity = IbmIdentity()
        # IBM accounts besides the seeded one, the same after every reset
        self.other_ibm_identities = [
            new_identity(self.ibm_identity.region) for _ in range(ibm_accounts - 1)
        ]
        self.cos = CosServer(
            self.ibm_identity.cos_hmac_access_key_id,
            self.ibm_identity.cos_hmac_secret_access_key,
        )
        # The admin API's bearer token (faults, reset, request log, clock, throttle).
        self.admin_token = secrets.token_urlsafe(32)
        self.app = Application(self)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Emulator:
        """Listen on the main and COS ports and build a fresh state."""
        self.base_url = f"https://127.0.0.1:{self._listen('main', self._port)}"
        self.cos.endpoint = f"http://127.0.0.1:{self._listen('cos')}"
        self.reset()
        return self

    def stop(self) -> None:
        """Stop every listener."""
        with self._lock:
            listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            _close(listener)
        if self._tmp:
            self._tmp.cleanup()

    def reset(self) -> None:
        """Forget every resource, fault, logged request and throttling bucket; close vault
        origins; throttling back to what the emulator started with."""
        with self._lock:
            vaults = [
                port for port, listener in self._listeners.items() if listener.origin == "vault"
            ]
        for port in vaults:
            self._unlisten(port)
        self.requests.clear()
        self.cos.reset()
        self.state = EmulatorState(
            self.identity,
            self.base_url,
            lambda: self._listen("vault"),
            self._unlisten,
            cos=self.cos,
            ca_pem=self.ca_path.read_bytes(),
        )
        self.state.ensure_subscriptions(self.subscriptions)
        for other in self.other_ibm_identities:
            self.state.ibm.add(other)
        self.throttle = Throttle(self.limits) if self.limits else None

    @property
    def throttle(self) -> Throttle | None:
        """ARM's and Compute's buckets while throttling is on (None: off). Setting it switches
        Key Vault's windows too, fresh."""
        return self._throttle

    @throttle.setter
    def throttle(self, throttle: Throttle | None) -> None:
        self._throttle = throttle
        if self.state is not None:
            self.state.keyvault.throttle = VaultThrottle() if throttle else None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self, origin: str, port: int = 0) -> int:
        context = None if origin == "cos" else self.ssl_context
        listener = Listener(self.app, origin, port, context)
        # A vault's origin stands for its DNS name, which Azure never gives another vault, and
        # clients cache a vault's challenge (its tenant) per origin (azure-keyvault-keys'
        # process-wide http_challenge_cache): a port this emulator served a vault on is never
        # handed to another one, or that vault would be challenged for the old one's tenant.
        refused = []
        while origin == "vault" and listener.server_address[1] in self._vault_ports:
            refused.append(listener)
            listener = Listener(self.app, origin, port, context)
        for old in refused:
            old.server_close()
        actual = listener.server_address[1]
        with self._lock:
            if origin == "vault":
                self._vault_ports.add(actual)
            self._listeners[actual] = listener
        threading.Thread(
            target=listener.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"emulator-{origin}-{actual}",
            daemon=True,
        ).start()
        return actual

    def _unlisten(self, port: int) -> None:
        with self._lock:
            listener = self._listeners.pop(port, None)
        if listener is not None:
            threading.Thread(target=_close, args=(listener,), daemon=True).start()

    # -- shortcuts for tests and the CLI -----------------------------------------------------
    @property
    def ca_path(self) -> Path:
        """The CA certificate clients must trust."""
        return self.tls.ca_cert

    @property
    def faults(self) -> FaultInjector:
        """The fault injector of the current state."""
        assert self.state is not None
        return self.state.faults

    @property
    def arm(self) -> ArmModel:
        """The ARM model of the current state."""
        assert self.state is not None
        return self.state.arm

    def endpoints(self) -> dict[str, str]:
        """What a client needs to reach the emulator (no secret)."""
        return {
            "arm": self.base_url + "/",
            "authority": self.base_url,
            "tenant_id": self.identity.tenant_id,
            "subscription_id": self.identity.subscription_id,
            "client_id": self.identity.client_id,
            "ca_bundle": str(self.ca_path),
            "ibm_iam": self.base_url,
            "ibm_key_protect": self.base_url,
            "ibm_softlayer": self.base_url + "/rest/v3.1",
            "ibm_cos": self.cos.endpoint,
            "ibm_account_id": self.ibm_identity.account_id,
            "ibm_region": self.ibm_identity.region,
            "ibm_key_protect_instance": self.ibm_identity.key_protect_instance,
            "ibm_cos_instance": self.ibm_identity.cos_instance,
            "ibm_cos_hmac_access_key_id": self.ibm_identity.cos_hmac_access_key_id,
            # the other accounts, in order (comma-separated)
            "ibm_other_account_ids": ",".join(i.account_id for i in self.other_ibm_identities),
            "ibm_other_key_protect_instances": ",".join(
                i.key_protect_instance for i in self.other_ibm_identities
            ),
        }

    # -- the admin API (main origin, under /_emulator) ----------------------------------------
    def admin(self, request: Request) -> Response:
        """Faults, reset, the request log, the endpoints and subscriptions, for `byok
        emulator`."""
        state = self.state
        assert state is not None
        path = request.path.split("/_emulator", 1)[1].rstrip("/")
        try:
            if path == "/faults" and request.method == "POST":
                fault = state.faults.add(Fault(**request.json()))
                return Response(201, fault.to_json())
            if path == "/faults" and request.method == "GET":
                return Response(200, [f.to_json() for f in state.faults.list()])
            if path == "/faults" and request.method == "DELETE":
                state.faults.clear()
                return Response(204)
            if path == "/reset" and request.method == "POST":
                self.reset()
                return Response(204)
            if path == "/requests" and request.method == "GET":
                query = request.query
                found = self.requests.find(
                    query.get("method"), query.get("path"), query.get("origin")
                )
                return Response(200, [e.to_json() for e in found])
            if path == "/endpoints" and request.method == "GET":
                return Response(200, self.endpoints())
            if path == "/subscriptions" and request.method == "POST":
                count = int(request.json().get("count", 1))
                return Response(200, {"subscriptions": state.ensure_subscriptions(count)})
            if path == "/clock":
                return clock_admin(state.keyvault.clock, request)
        except (TypeError, ValueError) as exc:
            return HttpError(400, "BadRequest", str(exc)).response()
        return HttpError(404, "UnsupportedOperation", f"No admin operation {path!r}.").response()
