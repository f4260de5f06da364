"""The one way to reach a service's host: this machine, the SSH host's connection broker, or our own login.

It sits above `hosts/` (the implementations, which know nothing of brokers)
and `broker/` (whose client it asks first): every command and the API open
their host here, so the choice and its fallbacks are made in one place.
"""

from __future__ import annotations

from .config import DEFAULT_CONNECTION_PERSIST, is_ssh_host
from .errors import BrokerUnavailable, ConfigError, HostError
from .hosts import Host, LocalHost

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from .config import Config
    from .prompts import Prompt

def open_host(config: Config, prompt: Prompt | None = None, *, accept_new_host_key: bool = False) -> Host:
    """The host of `config`'s service; login questions go to `prompt` (default: the terminal or Jupyter
    cell of the call); `accept_new_host_key` records an unknown host key (never a changed one)."""
    if not config.remote:
        return LocalHost()
    return open_ssh(config.ssh_target, config.connection_persist, prompt, accept_new_host_key=accept_new_host_key)


def open_target(target: str | None, prompt: Prompt | None = None, persist: float = DEFAULT_CONNECTION_PERSIST,
                *, accept_new_host_key: bool = False) -> Host:
    """This machine (None), or an SSH host named like `ssh_hostname` (user@host or an ~/.ssh/config alias)."""
    if target is None:
        return LocalHost()
    if not is_ssh_host(target):  # what ssh_hostname accepts in a config
        raise ConfigError(f"--host: {target[:80]!r} is not an SSH host name (use HOST, USER@HOST or an "
                          "alias from ~/.ssh/config)")
    return open_ssh(target, persist, prompt, accept_new_host_key=accept_new_host_key)


def open_ssh(target: str, persist: float, prompt: Prompt | None = None, *, accept_new_host_key: bool = False) -> Host:
    """The SSH host `target` through its broker (started if need be), else logged in here.

    `persist` 0 means no broker: one login for this command only. A broker that
    cannot serve is invisible: the command logs in itself (paramiko is imported
    only then).
    """
    if persist > 0:
        from .broker.client import BrokeredHost, attach

        try:
            attached = attach(target, persist, prompt, accept_new_host_key=accept_new_host_key)
            return BrokeredHost(target, persist, prompt, attached)
        except BrokerUnavailable as exc:
            import logging  # only now: with its dependencies, a tenth of a cold start

            logging.getLogger("remote_http_launcher.broker").info(
                "no connection broker for %s (%s); logging in directly", target, exc)
    try:
        from .hosts.ssh import SSHHost
    except ImportError as exc:  # paramiko missing or broken
        raise HostError(f"SSH support is not available ({exc}); reinstall remote-http-launcher") from exc
    return SSHHost.connect(target, prompt=prompt, accept_new_host_key=accept_new_host_key)
