"""Key Vault key identifiers: versioned and versionless forms (no Prefect import)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_KID = re.compile(r"^(?P<vault>https://[^/]+)/keys/(?P<name>[^/]+)(/(?P<version>[^/]*))?/?$")


@dataclass(frozen=True)
class KeyId:
    """A parsed key identifier."""

    vault_url: str  # https://host[:port] (no trailing slash)
    name: str
    version: str | None

    @classmethod
    def parse(cls, kid: str) -> KeyId:
        """Parse 'https://vault/keys/name[/version]'; ValueError names what is wrong."""
        match = _KID.match(kid.strip())
        if not match:
            raise ValueError(
                f"'{kid}' is not a Key Vault key id (https://<vault>/keys/<name>[/<version>])"
            )
        return cls(match["vault"], match["name"], match["version"] or None)

    @property
    def versionless(self) -> str:
        """The id without version: services that take it follow the key's latest version."""
        return f"{self.vault_url}/keys/{self.name}"

    @property
    def versioned(self) -> str:
        """The id with its version (ValueError if it has none)."""
        if not self.version:
            raise ValueError(f"key id '{self.versionless}' has no version")
        return f"{self.versionless}/{self.version}"
