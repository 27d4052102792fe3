"""SDK classes imported when a client is first built, not when the flow's module loads: a
flow run's process then loads only the SDKs its steps use (azure-mgmt-network, ibm-vpc and
kubernetes take 1-3 s each to import). Annotations import them under TYPE_CHECKING."""

from __future__ import annotations

import importlib
import sys
from typing import Any


def load(path: str) -> Any:
    """The object `package.module:Name`, its module imported on first use."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def if_loaded(path: str) -> tuple[type[Any], ...]:
    """The class `package.module:Name` if its module is already imported, else nothing: for
    isinstance checks on an SDK's exceptions without importing it (never imported, it raised
    nothing)."""
    module, _, name = path.partition(":")
    loaded = sys.modules.get(module)
    return (getattr(loaded, name),) if loaded is not None else ()
