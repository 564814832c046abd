"""steer: inference-time personalization middleware for LLMs.

Heavy parts load on first use; ``import steer`` only binds these names lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from steer.version import __version__

__all__ = [
    "AsyncClient",
    "Client",
    "InProcessClient",
    "Pipeline",
    "Settings",
    "__version__",
    "create_app",
    "load_settings",
]

_LAZY = {
    "Client": "steer.client",
    "AsyncClient": "steer.client",
    "InProcessClient": "steer.inprocess",
    "Pipeline": "steer.inprocess",  # InProcessClient's earlier name
    "create_app": "steer.server.app",
    "Settings": "steer.settings",
    "load_settings": "steer.settings",
}

if TYPE_CHECKING:
    from steer.client import AsyncClient, Client
    from steer.inprocess import InProcessClient, Pipeline
    from steer.server.app import create_app
    from steer.settings import Settings, load_settings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'steer' has no attribute {name!r}")
