"""Stopping a tunnel keeper: found through its lock, and signalled only once verified as ours.

Before any signal the lock's holder is checked again: same start time, and a
command line naming our keeper module and the key (`lock.is_keeper`).
"""

from __future__ import annotations

import os
import time

from .. import statefiles
from ..locks import LockOwner
from ..processes import terminate
from ..service import KILL_WAIT, STOP_TIMEOUT
from .lock import KeeperLock, is_keeper

POLL = 0.05


def stop_owner(owner: LockOwner, key: str, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM (the keeper cleans up), SIGKILL after `timeout`; True once it is gone.

    Only a verified keeper is signalled; SIGKILL follows only while the same
    process (same start time) still exists.
    """
    if not is_keeper(owner, key):
        return True
    for force, wait in ((False, timeout), (True, KILL_WAIT)):
        if not terminate(owner.pid, force=force):
            return True
        deadline = time.monotonic() + wait
        # Waited for by identity alone, not is_keeper: an exiting process may already show no command line.
        while owner.same_process() and time.monotonic() < deadline:
            time.sleep(POLL)
        if not owner.same_process():
            return True
    return False


def stop_holder(owner: LockOwner, key: str, timeout: float = STOP_TIMEOUT) -> bool | None:
    """End the tunnel of `key` that the lock's holder keeps: a keeper process is stopped (`stop_owner`, True
    once it is gone); a broker is asked to end that tunnel alone (None), never signalled: its other tunnels
    go on, and the run asking may be one of its own."""
    broker = owner.data.get("broker")
    if isinstance(broker, str) and is_keeper(owner, key):
        from ..broker.client import stop_tunnel

        stop_tunnel(broker, key)  # it removes that tunnel's client file and lock itself
        return None
    return stop_owner(owner, key, timeout)


def stop_keeper(key: str, connection_dir: str | os.PathLike[str] | None = None,
                timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the tunnel keeper of `key` (found through its lock); its PID, or None when none ran.

    The keeper removes its client file and lock itself; when it had to be
    killed, both are removed here (the client file only if it names that keeper).
    """
    client_path = statefiles.client_dir(connection_dir) / f"{key}.json"
    lock = KeeperLock(client_path, key)
    raw, owner = lock.read()
    if owner is None or not is_keeper(owner, key):
        return None
    if stop_holder(owner, key, timeout) is None:
        return owner.pid  # a broker: it ended that tunnel and removed its files
    payload = statefiles.read_payload(client_path)
    if payload is not None and payload.get("keeper_pid") == owner.pid:
        statefiles.remove(client_path)
    lock.break_if_gone(raw)
    return owner.pid
