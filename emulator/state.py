"""The emulator's whole state: every service's models, wired together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emulator.cos import CosServer
from emulator.faults import FaultInjector
from emulator.http import Router
from emulator.services.arm import routes as arm_routes
from emulator.services.arm.models import ArmModel
from emulator.services.authorization import models as authorization_models
from emulator.services.authorization import routes as authorization_routes
from emulator.services.compute import gallery as gallery_models
from emulator.services.compute import models as compute_models
from emulator.services.compute import virtual_machines as vm_models
from emulator.services.containerregistry import models as containerregistry_models
from emulator.services.containerservice import models as containerservice_models
from emulator.services.deployments import models as deployments_models
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
from emulator.services.msi import models as msi_models
from emulator.services.network import models as network_models
from emulator.services.softlayer import routes as softlayer_routes
from emulator.services.softlayer.models import SoftLayerModel


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
        self.iam = IamModel(self.ibm_identity, self.faults)
        self.keyprotect = KeyProtectModel(
            self.iam, self.ibm_identity.region, self.ibm_identity.key_protect_instance
        )
        self.softlayer = SoftLayerModel(self.iam, self.keyprotect, cos)

        self.router = Router()
        kubernetes_routes.register(self.router, self.kubernetes)
        entra_routes.register(self.router, self.entra, base_url)
        keyvault_routes.register(self.router, self.keyvault, base_url, identity.tenant_id)
        authorization_routes.register(self.router, self.arm)
        ibm_iam_routes.register(self.router, self.iam, base_url)
        keyprotect_routes.register(self.router, self.keyprotect)
        softlayer_routes.register(self.router, self.softlayer)
        arm_routes.register(self.router, self.arm, base_url)  # generic routes last
