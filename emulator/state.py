"""The emulator's whole state: every service's models, wired together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emulator.cos import CosServer
from emulator.faults import FaultInjector
from emulator.http import Router
from emulator.ibm_accounts import IbmAccounts, new_identity
from emulator.services.arm import routes as arm_routes
from emulator.services.arm.models import ArmModel
from emulator.services.authorization import models as authorization_models
from emulator.services.authorization import routes as authorization_routes
from emulator.services.compute import gallery as gallery_models
from emulator.services.compute import models as compute_models
from emulator.services.compute import virtual_machines as vm_models
from emulator.services.containerregistry import models as containerregistry_models
from emulator.services.containerservice import models as containerservice_models
from emulator.services.containerservice import routes as containerservice_routes
from emulator.services.deployments import models as deployments_models
from emulator.services.deployments import routes as deployments_routes
from emulator.services.entra import routes as entra_routes
from emulator.services.entra.models import EntraModel, Principal
from emulator.services.ibm_iam import routes as ibm_iam_routes
from emulator.services.ibm_iam.models import IamModel, IbmIdentity
from emulator.services.keyprotect import routes as keyprotect_routes
from emulator.services.keyprotect.models import KeyProtectModel
from emulator.services.keyvault import models as keyvault_models
from emulator.services.keyvault import routes as keyvault_routes
from emulator.services.kubernetes import models as kubernetes_models
from emulator.services.kubernetes import routes as kubernetes_routes
from emulator.services.managedhsm import models as managedhsm_models
from emulator.services.managedhsm import routes as managedhsm_routes
from emulator.services.msi import models as msi_models
from emulator.services.network import models as network_models
from emulator.services.resourcegraph import routes as resourcegraph_routes
from emulator.services.resourcegraph.models import ResourceGraphModel
from emulator.services.softlayer import routes as softlayer_routes
from emulator.services.softlayer.models import SoftLayerModel
from emulator.services.vpc import routes as vpc_routes
from emulator.services.vpc.models import VpcModel


@dataclass(frozen=True)
class Identity:
    """The fixed identifiers a fresh emulator starts with (stable across resets)."""

    tenant_id: str = "72f988bf-0000-4000-8000-00000000b10c"
    subscription_id: str = "5f6a9e1c-0000-4000-8000-00000000b10c"
    client_id: str = "0c1d2e3f-0000-4000-8000-00000000b10c"
    client_secret: str = "emulator-client-secret"


class EmulatorState:
    """Models of every service; `router` serves them. A reset makes a new one."""

    def __init__(
        self,
        identity: Identity,
        base_url: str,
        listen: Callable[[], int],
        unlisten: Callable[[int], None],
        cos: CosServer | None = None,
        ca_pem: bytes = b"",
    ) -> None:
        self.faults = FaultInjector()
        self.entra = EntraModel(identity.tenant_id, self.faults)
        self.service_principal: Principal = self.entra.add_service_principal(
            "byok-flows", identity.client_id, identity.client_secret
        )
        self.arm = ArmModel(self.entra, self.faults, identity.subscription_id)
        self.keyvault = keyvault_models.KeyVaultModel(self.arm, listen, unlisten)
        msi_models.register_types(self.arm)
        authorization_models.register_types(self.arm)
        keyvault_models.register_types(self.arm, self.keyvault)
        self.managed_hsm = managedhsm_models.register_types(self.arm, self.keyvault)
        des_hooks = compute_models.register_types(self.arm, self.keyvault)
        containerregistry_models.register_types(self.arm, self.keyvault)
        deployments_models.register_types(self.arm)
        self.image_versions = gallery_models.register_types(self.arm, des_hooks)
        vm_models.register_types(self.arm, des_hooks)
        network_models.register_types(self.arm)
        self.kubernetes = kubernetes_models.KubernetesModel(self.arm)
        containerservice_models.register_types(
            self.arm, self.kubernetes, des_hooks, base_url, ca_pem
        )
        self.ibm_identity = IbmIdentity()
        # one emulator clock (POST /_emulator/clock) for Key Vault and Key Protect
        self.ibm = IbmAccounts(self.faults, self.keyvault.clock, cos, base_url)
        home = self.ibm.add(self.ibm_identity)
        self.iam: IamModel = home.iam
        self.keyprotect: KeyProtectModel = home.keyprotect
        self.softlayer: SoftLayerModel = home.softlayer
        self.vpc: VpcModel = self.ibm.vpc(home, self.ibm_identity.region)
        self.resource_graph = ResourceGraphModel(self.arm)

        self.router = Router()
        kubernetes_routes.register(self.router, self.kubernetes)
        entra_routes.register(self.router, self.entra, base_url)
        data_caller = keyvault_routes.register(
            self.router, self.keyvault, base_url, identity.tenant_id
        )
        managedhsm_routes.register(self.router, self.managed_hsm, data_caller)
        authorization_routes.register(self.router, self.arm)
        ibm_iam_routes.register(self.router, self.ibm, base_url)
        keyprotect_routes.register(self.router, self.ibm)
        softlayer_routes.register(self.router, self.ibm)
        vpc_routes.register(self.router, self.ibm)
        resourcegraph_routes.register(self.router, self.resource_graph)
        deployments_routes.register(self.router, self.arm)
        containerservice_routes.register(self.router, self.arm)
        arm_routes.register(self.router, self.arm, base_url)  # generic routes last

    # -- tenants, subscriptions and principals (for tests and the CLI) -------------------------
    def add_tenant(self, tenant_id: str | None = None, name: str = "") -> str:
        """A new Entra tenant (directory) with no subscription yet; returns its id."""
        return self.entra.add_tenant(tenant_id, name)

    def add_subscription(
        self, tenant_id: str | None = None, name: str = "", subscription_id: str | None = None
    ) -> str:
        """A new subscription of a tenant (default: the home tenant); returns its id. Its
        resources are invisible from other subscriptions, its routes refuse other tenants'
        tokens."""
        return self.arm.add_subscription(subscription_id, tenant_id, name).subscription_id

    def add_service_principal(
        self,
        tenant_id: str | None = None,
        name: str = "byok-extra",
        client_id: str | None = None,
        secret: str | None = None,
    ) -> Principal:
        """A new service principal of a tenant (default: the home tenant); its `client_id`
        and `secret` get tokens from that tenant's token endpoint. It holds no role."""
        return self.entra.add_service_principal(name, client_id, secret, tenant_id)

    def add_ibm_account(self, region: str | None = None) -> IbmIdentity:
        """Another IBM Cloud account (default: in the home account's region), with its user,
        API key and Key Protect instance; its tokens see only its own state."""
        return self.ibm.add(new_identity(region or self.ibm_identity.region)).identity

    def grant_role(self, principal_id: str, role_name: str, scope: str) -> str:
        """Assign a built-in role (by name) at `scope`, in effect at once; returns the
        assignment's id. ARM checks calls against assignments only when
        `arm.enforce_authorization` is on."""
        return str(authorization_models.grant(self.arm, principal_id, role_name, scope)["id"])

    def ensure_subscriptions(self, count: int) -> list[str]:
        """At least `count` subscriptions of the home tenant (the extra ones with fixed ids,
        the same after every reset); returns the first `count` ids, the default one first."""
        if count < 1:
            raise ValueError(f"count = {count}: must be at least 1")
        home = self.entra.tenant_id.lower()
        for i in range(1, count):
            sub_id = f"{self.arm.default_subscription[:24]}{i:012d}"
            if sub_id not in self.arm.subscriptions:
                self.add_subscription(name=f"fleet-{i}", subscription_id=sub_id)
        ids = [s for s, sub in self.arm.subscriptions.items() if sub.tenant_id == home]
        return ids[:count]
