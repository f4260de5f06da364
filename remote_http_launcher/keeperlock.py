"""At most one tunnel keeper per key, and only our keeper is ever signalled.

The keeper holds `<client dir>/<key>.keeper.lock` for its whole life: created
with O_EXCL (so concurrent runs cannot both become keepers), it names the
owner's PID and process start time, and once the tunnel is up the client
payload it serves. A lock whose owner is gone, or whose PID now belongs to
another process, is broken. Before any signal the owner is checked again:
same start time, and a command line naming our keeper module and the key.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple

from . import statefiles
from .localprocess import process_cmdline, process_identity
from .processes import KILL_WAIT, STOP_TIMEOUT

MARKER = "remote_http_launcher.keeper"
PARTIAL_GRACE = 5.0  # an unparsable lock younger than this is a create still being written
POLL = 0.05


def keeper_log(client_path: Path) -> Path:
    return client_path.with_name(f"{client_path.stem}.keeper.log")


class Owner(NamedTuple):
    """What a lock file says about its keeper."""

    pid: int
    started: str
    token: str
    payload: dict[str, Any] | None  # None while the keeper is still starting

    @classmethod
    def parse(cls, raw: bytes | None) -> Owner | None:
        info = statefiles.decode(raw)
        if info is None:
            return None
        pid, started, token, payload = (info.get(k) for k in ("pid", "started", "token", "payload"))
        if not isinstance(pid, int) or not isinstance(started, str) or not isinstance(token, str):
            return None
        return cls(pid, started, token, payload if isinstance(payload, dict) else None)

    def is_keeper(self, key: str) -> bool:
        """Still the same process, and one of our keepers for this key (never signal anything else)."""
        if process_identity(self.pid) != self.started:
            return False
        cmdline = process_cmdline(self.pid)
        if cmdline is None:
            return os.name == "nt"  # no command line to read there: the start time has to do
        return MARKER in cmdline and key in cmdline

    def stop(self, key: str, timeout: float = STOP_TIMEOUT) -> bool:
        """SIGTERM (the keeper cleans up), SIGKILL after `timeout`; True once it is gone.

        Only a verified keeper is signalled; SIGKILL follows only while the same
        process (same start time) still exists.
        """
        if not self.is_keeper(key):
            return True
        for sig, wait in ((signal.SIGTERM, timeout), (getattr(signal, "SIGKILL", signal.SIGTERM), KILL_WAIT)):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(POLL)
            if not self.alive():
                return True
        return False

    def alive(self) -> bool:
        """The signalled process still exists (an exiting one may already show an empty command line)."""
        return process_identity(self.pid) == self.started


class KeeperLock:
    """`<key>.keeper.lock` beside the client connection file."""

    def __init__(self, client_path: Path, key: str) -> None:
        self.path = client_path.with_name(f"{key}.keeper.lock")
        self.key = key
        self.token = os.urandom(16).hex()
        self.held = False

    def read(self) -> tuple[bytes | None, Owner | None]:
        raw = statefiles.read_bytes(self.path)
        return raw, Owner.parse(raw)

    def try_acquire(self) -> bool:
        statefiles.ensure_private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, statefiles.FILE_MODE)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._record(None))
        self.held = True
        return True

    def publish(self, payload: dict[str, Any]) -> None:
        """Record the payload this keeper serves, so a run that lost its client file can reuse it."""
        statefiles.write_atomic(self.path, self._record(payload))

    def release(self) -> None:
        owner = self.read()[1]
        if self.held and owner is not None and owner.token == self.token:
            statefiles.remove(self.path)
        self.held = False

    def break_if_stale(self, raw: bytes | None, owner: Owner | None) -> bool:
        """Remove a lock whose owner is gone; True when the caller may try to acquire again."""
        if raw is None:
            return True
        if owner is None:
            try:
                young = time.time() - self.path.stat().st_mtime < PARTIAL_GRACE
            except FileNotFoundError:
                return True
            if young:
                return False
        elif owner.is_keeper(self.key):
            return False
        aside = self.path.with_name(f"{self.path.name}.{self.token}.broken")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True
        moved = statefiles.read_bytes(aside)
        if moved != raw and moved is not None:  # a fresh lock replaced the stale one meanwhile: put it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        statefiles.remove(aside)
        return True

    def _record(self, payload: dict[str, Any] | None) -> bytes:
        pid = os.getpid()
        record: dict[str, Any] = {"pid": pid, "started": process_identity(pid), "token": self.token,
                                  "key": self.key}
        if payload is not None:
            record["payload"] = payload
        return statefiles.encode(record)


def still_serving(client_path: Path, key: str, payload: dict[str, Any]) -> bool:
    """False when the keeper a tunnel payload names is gone: its local port may now be anyone's."""
    pid = payload.get("keeper_pid")
    if pid is None:
        return True
    owner = KeeperLock(client_path, key).read()[1]
    return owner is not None and owner.pid == pid and process_identity(pid) == owner.started


def stop_keeper(key: str, connection_dir: str | os.PathLike[str] | None = None,
                timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the tunnel keeper of `key` (found through its lock); its PID, or None when none ran.

    The keeper removes its client file and lock itself; when it had to be
    killed, both are removed here (the client file only if it names that keeper).
    """
    client_path = statefiles.client_dir(connection_dir) / f"{key}.json"
    lock = KeeperLock(client_path, key)
    raw, owner = lock.read()
    if owner is None or not owner.is_keeper(key):
        return None
    owner.stop(key, timeout)
    payload = statefiles.decode(statefiles.read_bytes(client_path))
    if payload is not None and payload.get("keeper_pid") == owner.pid:
        statefiles.remove(client_path)
    lock.break_if_stale(raw, owner)
    return owner.pid
