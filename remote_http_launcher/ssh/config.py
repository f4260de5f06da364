"""~/.ssh/config, resolved the way OpenSSH would: users already describe their hosts there.

`resolve` turns a host name or alias into an Endpoint (address, port, user
and the options that apply), which every later step asks for its settings
and uses to name the server in messages.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HostError
from ._paramiko import allow_match_exec, paramiko, user_ssh_config

DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_REPLY_TIMEOUT = 15.0  # a server silent this long while we wait for it is gone
DEFAULT_ALIVE_COUNT = 3  # OpenSSH's ServerAliveCountMax
HOP_RE = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:]+))(?::(?P<port>\d+))?$")


def shorten(path: Path | str) -> str:
    """A path as the user wrote it, with the home directory shown as `~`."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home):] if text == home or text.startswith(home + os.sep) else text


@dataclass(frozen=True)
class Endpoint:
    """One SSH server as ~/.ssh/config describes it."""

    alias: str
    hostname: str
    port: int
    user: str
    options: dict[str, Any]

    @property
    def label(self) -> str:
        """How messages name this server: `ssh alias (address:port)` or `ssh user@host:port`."""
        if self.alias != self.hostname:
            return f"ssh {self.alias} ({self.hostname}:{self.port})"
        return f"ssh {self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name looked up in known_hosts: HostKeyAlias, else host or [host]:port."""
        alias = self.options.get("hostkeyalias")
        if alias:
            return str(alias)
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    @property
    def connect_timeout(self) -> float:
        value = self.options.get("connecttimeout")
        try:
            return float(value) if value and float(value) > 0 else DEFAULT_CONNECT_TIMEOUT
        except ValueError:
            return DEFAULT_CONNECT_TIMEOUT

    @property
    def reply_timeout(self) -> float:
        """Seconds of silence after which the server counts as gone: like ssh, ServerAliveInterval
        times ServerAliveCountMax when set; else DEFAULT_REPLY_TIMEOUT (ssh itself would wait for TCP)."""
        try:
            interval = float(self.option("serveraliveinterval") or 0)
            count = int(self.option("serveralivecountmax") or DEFAULT_ALIVE_COUNT)
        except ValueError:
            return DEFAULT_REPLY_TIMEOUT
        return interval * max(count, 1) if interval > 0 else DEFAULT_REPLY_TIMEOUT

    def option(self, name: str, default: str = "") -> str:
        return str(self.options.get(name, default)).strip()

    def flag(self, name: str, default: bool) -> bool:
        value = self.option(name).lower()
        return default if not value else value in ("yes", "true")

    def fail(self, step: str, detail: str, kind: type[HostError] = HostError) -> HostError:
        """`LABEL: STEP: DETAIL`, with this server as the error's `host` and the step as its `step`."""
        return kind(f"{self.label}: {step}: {detail}", host=self.alias, step=step)


def load_ssh_config() -> paramiko.SSHConfig:
    """~/.ssh/config (empty when missing); `Match exec` lines get the invoke that paramiko was loaded without."""
    path = user_ssh_config()
    allow_match_exec(path)
    try:
        return paramiko.SSHConfig.from_path(str(path)) if path.is_file() else paramiko.SSHConfig()
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise HostError(f"ssh config {shorten(path)}: {exc}", step="ssh config") from None


def resolve(config: paramiko.SSHConfig, host: str, user: str | None = None, port: int | None = None) -> Endpoint:
    """Apply ~/.ssh/config to a host name; explicit user and port win over it."""
    options = dict(config.lookup(host))
    try:
        config_port = int(options.get("port", DEFAULT_PORT))
    except ValueError:
        raise HostError(f"ssh {host}: ~/.ssh/config: Port {options['port']!r} is not a number", host=host,
                        step="ssh config") from None
    return Endpoint(alias=host, hostname=str(options.get("hostname", host)), port=port or config_port,
                    user=user or str(options.get("user") or getpass.getuser()), options=options)


def parse_hop(spec: str) -> tuple[str | None, str, int | None]:
    """`[ssh://][user@]host[:port]` (IPv6 in brackets) from a ProxyJump list."""
    match = HOP_RE.match(spec.strip())
    if not match:
        raise HostError(f"ProxyJump: cannot parse jump host {spec!r} (expected [user@]host[:port])",
                        step="ProxyJump")
    port = match.group("port")
    return match.group("user"), match.group("v6") or match.group("host"), int(port) if port else None


__all__ = ["DEFAULT_ALIVE_COUNT", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_PORT", "DEFAULT_REPLY_TIMEOUT", "HOP_RE",
           "Endpoint", "load_ssh_config", "parse_hop", "resolve", "shorten"]
