"""One lock-file implementation, on the `Host` interface: launch locks and keeper locks.

A lock is a file created exclusively (so two runs never both hold it) that
names its owner: machine, PID, process start time, a random token, and the
time it was taken. Only the holder's token releases it. A lock judged stale
(its owner gone, or its record unreadable for too long) is broken by renaming
it aside first: of two runs breaking the same lock only one rename succeeds,
and a fresh lock moved aside by mistake is put back.
"""

from __future__ import annotations

import os
import time

from . import statefiles
from .processes import process_identity
from .records import NamedTuple

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .hosts import Host


class LockOwner(NamedTuple):
    """What a lock file says about its holder."""

    machine: str | None  # None in records that predate it (keeper locks: always this machine)
    pid: int
    started: str | None
    taken_at: float
    token: str
    data: dict[str, Any]  # the whole record, with whatever the holder added

    @classmethod
    def parse(cls, raw: bytes | None) -> LockOwner | None:
        info = statefiles.decode(raw)
        if info is None:
            return None
        machine, pid, started, taken_at, token = (info.get(k) for k in ("owner", "pid", "started", "time", "token"))
        if isinstance(pid, bool) or not isinstance(pid, int) or not isinstance(token, str):
            return None
        return cls(machine if isinstance(machine, str) else None, pid, started if isinstance(started, str) else None,
                   float(taken_at) if isinstance(taken_at, (int, float)) else 0.0, token, info)

    def same_process(self) -> bool:
        """The holder (on this machine) still runs: its PID is alive with the recorded start time."""
        return process_identity(self.pid) == self.started

    def process_gone(self) -> bool:
        """The holder ran on this machine and has exited (or its PID now belongs to another process)."""
        if self.machine is not None and self.machine != machine_name():
            return False  # another machine's process: only the lock's age can tell
        current = process_identity(self.pid)
        return current is None or (self.started is not None and current != self.started)


class FileLock:
    """A lock file at `path` on `host`."""

    def __init__(self, host: Host, path: str) -> None:
        self.host = host
        self.path = path
        self.token = os.urandom(16).hex()
        self.held = False

    def record(self, **extra: Any) -> bytes:
        """This process as the lock's owner, plus `extra` fields; one line (the launched service looks for
        the token in the first line: rhl_release_lock in sh/prelude.sh)."""
        from . import jsontext  # not on the warm path, which takes no lock

        pid = os.getpid()
        return jsontext.dumps({"owner": machine_name(), "pid": pid, "started": process_identity(pid),
                               "time": time.time(), "token": self.token, **extra}).encode() + b"\n"

    def acquire(self, **extra: Any) -> bool:
        self.held = self.host.create_exclusive(self.path, self.record(**extra))
        return self.held

    def acquire_then_read(self, other: str) -> bytes | None:
        """Take the lock and read `other` right after (in one flight where the host can); None when
        `other` is absent or the lock was not taken (see `held`)."""
        self.held, raw = self.host.create_then_read(self.path, self.record(), other)
        return raw

    def read(self) -> tuple[bytes | None, LockOwner | None]:
        raw = self.host.read(self.path)
        return raw, LockOwner.parse(raw)

    def rewrite(self, **extra: Any) -> None:
        """Replace our record (atomically) with one carrying `extra`, e.g. what the holder serves."""
        self.host.write_atomic(self.path, self.record(**extra))

    def release(self) -> None:
        """Remove the lock if it still holds our token."""
        if self.held:
            owner = self.read()[1]
            if owner is not None and owner.token == self.token:
                self.host.remove(self.path)
        self.held = False

    def released_elsewhere(self) -> None:
        """Someone we handed the token to (a launched service) removed the lock."""
        self.held = False

    def break_if_stale(self, raw: bytes | None, holder_alive: Callable[[LockOwner], bool], grace: float) -> bool:
        """Break the lock whose contents were `raw` if it is stale; True when the caller may try again.

        Stale: `holder_alive(owner)` is false, or the record is unreadable (a
        create still being written) for longer than `grace` seconds.
        """
        if raw is None:
            return True
        owner = LockOwner.parse(raw)
        if owner is None:
            mtime = self.host.mtime(self.path)
            if mtime is None:
                return True
            if time.time() - mtime <= grace:
                return False
        elif holder_alive(owner):
            return False
        self._break(raw)
        return True

    def _break(self, seen: bytes) -> None:
        """Remove the lock only if it still holds what was judged stale."""
        aside = f"{self.path}.{self.token}.broken"
        if not self.host.rename(self.path, aside):
            return
        moved = self.host.read(aside)
        if moved != seen and moved is not None:
            self.host.create_exclusive(self.path, moved)  # a fresh lock was moved by mistake: put it back
        self.host.remove(aside)


def machine_name() -> str:
    """This machine's host name, which a lock names as its owner: the kernel's node name, as
    socket.gethostname() gives it (socket itself, where there is no uname: Windows)."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return str(uname().nodename)
    import socket

    return socket.gethostname()
