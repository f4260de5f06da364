"""At most one tunnel keeper per key, and only our keeper is ever signalled.

The keeper holds `<client dir>/<key>.keeper.lock` (a `locks.FileLock` on this
machine) for its whole life; once the tunnel is up the lock also holds the
client payload it serves. A lock whose owner is gone, or whose PID now belongs
to another process, is broken. Before any signal the owner is checked again:
same start time, and a command line naming our keeper module and the key.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import statefiles
from ..clientfile import keeper_lock_path
from ..hosts.local import LocalHost
from ..locks import FileLock, LockOwner
from ..processes import process_cmdline, process_identity, terminate
from ..service import KILL_WAIT, STOP_TIMEOUT
from ..statefiles import ClientPayload

MARKER = "remote_http_launcher.keeper"
PARTIAL_GRACE = 5.0  # an unparsable lock younger than this is a create still being written
POLL = 0.05


def is_keeper(owner: LockOwner, key: str) -> bool:
    """Still the same process, and one of our keepers for this key (never signal anything else)."""
    if process_identity(owner.pid) != owner.started:
        return False
    cmdline = process_cmdline(owner.pid)
    if cmdline is None:
        return os.name == "nt"  # no command line to read there: the start time has to do
    return MARKER in cmdline and key in cmdline


def served_payload(owner: LockOwner) -> ClientPayload | None:
    """The payload a keeper published once its tunnel was up; None while it is still starting."""
    payload = owner.data.get("payload")
    return payload if isinstance(payload, dict) else None  # type: ignore[return-value]


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
        while _alive(owner) and time.monotonic() < deadline:
            time.sleep(POLL)
        if not _alive(owner):
            return True
    return False


def _alive(owner: LockOwner) -> bool:
    """The signalled process still exists (an exiting one may already show an empty command line)."""
    return process_identity(owner.pid) == owner.started


class KeeperLock(FileLock):
    """`<key>.keeper.lock` beside the client connection file."""

    def __init__(self, client_path: Path, key: str) -> None:
        super().__init__(LocalHost(), str(keeper_lock_path(client_path)))
        self.key = key

    def acquire_for_key(self) -> bool:
        return self.acquire(key=self.key)

    def publish(self, payload: ClientPayload) -> None:
        """Record the payload this keeper serves, so a run that lost its client file can reuse it."""
        self.rewrite(key=self.key, payload=payload)

    def break_if_gone(self, raw: bytes | None) -> bool:
        """Break the lock if its keeper is gone; True when the caller may try to acquire again."""
        return self.break_if_stale(raw, lambda owner: is_keeper(owner, self.key), PARTIAL_GRACE)


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
    stop_owner(owner, key, timeout)
    payload = statefiles.read_payload(client_path)
    if payload is not None and payload.get("keeper_pid") == owner.pid:
        statefiles.remove(client_path)
    lock.break_if_gone(raw)
    return owner.pid
