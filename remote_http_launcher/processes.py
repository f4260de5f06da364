"""Signalling services safely: only the process we launched, never a reused PID."""

from __future__ import annotations

import time

from .hosts import Host
from .statefiles import ServerState

STOP_TIMEOUT = 10.0


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


def terminate(host: Host, state: ServerState, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the service's process group, wait, then SIGKILL; True if it was running."""
    if not is_ours(host, state):
        return False
    assert state.pid is not None
    host.signal_group(state.pid, "TERM")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.process_start_time(state.pid) is None:
            return True
        time.sleep(host.poll_interval)
    if is_ours(host, state):
        host.signal_group(state.pid, "KILL")
    return True
