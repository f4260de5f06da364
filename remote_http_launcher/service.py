"""One service on its host: where its files are, what its record says, and safe signals.

A service is a config's key on a `Host`. Its record is the server status file;
its process is signalled only when it is verifiably the one that was launched
(PID and start time), never a reused PID.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from . import scripts, statefiles
from .statefiles import ServerState

if TYPE_CHECKING:
    from .config import Config
    from .hosts import Host

STOP_TIMEOUT = 10.0
KILL_WAIT = 5.0
WILDCARD_SERVER_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class Service(NamedTuple):
    """One service (a config's key) on one host: where its files are."""

    host: Host
    config: Config
    key: str

    @property
    def status_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.json"

    @property
    def log_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.log"

    @property
    def lock_file(self) -> str:
        return f"{self.host.state_dir}/{self.key}.lock"

    def read_state(self) -> ServerState | None:
        return ServerState.parse(statefiles.decode(self.host.read_state_file(f"{self.key}.json")))

    def server_interface(self, state: ServerState) -> str:
        """The address the service listens on, as seen from its host (a wildcard becomes loopback)."""
        interface = state.data.get("network_interface")
        if not isinstance(interface, str) or not interface:
            interface = self.config.network_interface
        return WILDCARD_SERVER_HOSTS.get(interface, interface)

    def log_tail(self, state: ServerState | None = None) -> str:
        """The end of the service's log on one line, for error messages."""
        path = state.log if state and state.log else self.log_file
        tail = self.host.tail(path).strip()
        return " | ".join(line.strip() for line in tail.splitlines() if line.strip()) or "(log is empty)"


def is_ours(host: Host, state: ServerState) -> bool:
    """True when state's PID is alive and is still the process that was launched.

    Status files written by the original implementation carry no start time;
    for those, a live PID is all we can check.
    """
    if state.pid is None:
        return False
    current = host.process_start_time(state.pid)
    if current is None:
        return False
    return state.start_time is None or state.start_time == current


def terminate(host: Host, state: ServerState, timeout: float = STOP_TIMEOUT) -> str | None:
    """Stop the process group of a service that is verifiably ours: SIGTERM, wait, SIGKILL.

    Returns the last signal needed ("TERM" or "KILL"), or None when the
    process was not ours (gone, or its PID reused): then nothing is signalled.
    """
    if not is_ours(host, state):
        return None
    assert state.pid is not None
    pid = state.pid
    host.signal_group(pid, "TERM")

    def group_alive() -> bool:
        return host.process_start_time(pid) is not None or \
            host.run_script(scripts.GROUP_ALIVE, [str(pid)]).returncode == 0

    if wait_gone(group_alive, timeout, host.poll_interval):
        return "TERM"
    if is_ours(host, state):
        host.signal_group(pid, "KILL")
    else:
        # The leader is gone, so its group can only hold its own children: no PID reuse possible.
        host.run_script(scripts.KILL_GROUP, [str(pid)])
    wait_gone(group_alive, KILL_WAIT, host.poll_interval)
    return "KILL"


def wait_gone(alive: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll until `alive()` is false; False if it still is after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
