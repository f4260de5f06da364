"""Where the service runs: this machine or an SSH server, behind one interface."""

from __future__ import annotations

from .base import Host, ScriptResult
from .local import LocalHost

__all__ = ["Host", "LocalHost", "ScriptResult"]
