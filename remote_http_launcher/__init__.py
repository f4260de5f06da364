"""Launch, supervise and reconnect to long-running HTTP services, locally or over SSH."""

from __future__ import annotations

from ._version import __version__
from .errors import (
    AuthenticationError,
    BrokerUnavailable,
    ConfigError,
    HandshakeError,
    HostError,
    HostKeyError,
    LauncherError,
    LaunchError,
    NotRunningError,
    ServiceFailedError,
    TemplateError,
    TunnelError,
    UsageError,
)

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:  # what the lazy attributes below resolve to, for type checkers
    from typing import Any

    from .api import logs, run, status, stop
    from .cli import main
    from .config import Configuration
    from .handle import ServiceHandle, launch

# Loaded on first use (PEP 562): `python -m remote_http_launcher` imports this
# package before the command line, and its warm path needs only part of the API.
_LAZY = {"logs": "api", "run": "api", "status": "api", "stop": "api", "main": "cli", "Configuration": "config",
         "launch": "handle", "ServiceHandle": "handle"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthenticationError",
    "BrokerUnavailable",
    "ConfigError",
    "Configuration",
    "HandshakeError",
    "HostError",
    "HostKeyError",
    "LaunchError",
    "LauncherError",
    "NotRunningError",
    "ServiceFailedError",
    "ServiceHandle",
    "TemplateError",
    "TunnelError",
    "UsageError",
    "__version__",
    "launch",
    "logs",
    "main",
    "run",
    "status",
    "stop",
]
