"""rollguard: a data plane for shipping machine-learning models safely.

``load_config(path)`` reads and validates a config file; ``create_app(config)`` is an async context
manager that builds every part (pools, state store, metrics, the data-plane and admin ASGI apps).
"""

from __future__ import annotations

from typing import Any

from proxy._version import __version__

__all__ = ["__version__", "create_app", "load_config"]


def __getattr__(name: str) -> Any:
    # Lazy, so `rollguard status` does not pay for importing the data plane.
    if name == "create_app":
        from proxy.app.build import build

        return build
    if name == "load_config":
        from proxy.config.load import load_config

        return load_config
    raise AttributeError(name)
