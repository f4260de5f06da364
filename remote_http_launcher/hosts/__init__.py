"""Where the service runs: this machine or an SSH server, behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Host, ScriptResult
from .local import LocalHost

if TYPE_CHECKING:
    from ..config import Config
    from ..prompts import Prompt


def open_host(config: Config, prompt: Prompt | None = None, *, accept_new_host_key: bool = False) -> Host:
    """Connect to the service's host: through its connection broker, whose login is shared (paramiko is
    imported only when this process logs in itself); login questions go to `prompt` (default: the
    terminal or Jupyter cell of the call); `accept_new_host_key` records an unknown host key (never a
    changed one)."""
    if not config.remote:
        return LocalHost()
    from ..broker.client import open_ssh_host

    return open_ssh_host(config.ssh_target, config.connection_persist, prompt,
                         accept_new_host_key=accept_new_host_key)


__all__ = ["Host", "LocalHost", "ScriptResult", "open_host"]
