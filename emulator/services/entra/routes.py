"""Entra ID's HTTP surface: OpenID discovery, the token endpoint, and Microsoft Graph."""

from __future__ import annotations

from emulator.http import Request, Response, Router
from emulator.services.entra import graph
from emulator.services.entra.models import EntraModel


def register(router: Router, entra: EntraModel, base_url: str) -> None:
    """Add the Entra routes; `base_url` is the emulator's https origin (the authority)."""

    def openid_configuration(request: Request) -> Response:
        tenant = request.params["tenant"]
        root = f"{base_url}/{tenant}"
        return Response(
            200,
            {
                "issuer": f"{root}/v2.0",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{root}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "tenant_region_scope": "NA",
            },
        )

    def token(request: Request) -> Response:
        return Response(200, entra.issue_token(request.params["tenant"], request.form()))

    router.add("GET", "/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    router.add("POST", "/{tenant}/oauth2/v2.0/token", token)
    graph.register(router, entra, base_url)
