"""Launch, supervise and reconnect to long-running HTTP services, locally or over SSH."""

from __future__ import annotations

from .api import logs, run, status, stop
from .errors import (
    AuthenticationError,
    ConfigError,
    HandshakeError,
    HostError,
    HostKeyError,
    LauncherError,
    LaunchError,
    TemplateError,
    TunnelError,
)
from .launcher import __version__

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "HandshakeError",
    "HostError",
    "HostKeyError",
    "LaunchError",
    "LauncherError",
    "TemplateError",
    "TunnelError",
    "__version__",
    "logs",
    "run",
    "status",
    "stop",
]
