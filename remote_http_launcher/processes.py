"""Signalling services safely: only the process we launched, never a reused PID."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import scripts

if TYPE_CHECKING:
    from .hosts import Host
    from .statefiles import ServerState

STOP_TIMEOUT = 10.0
KILL_WAIT = 5.0


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
        host.run_script('kill -s KILL -- "-$1" 2>/dev/null', [str(pid)])
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
