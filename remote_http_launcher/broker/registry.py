"""Where a broker is found: its files, its lock, and who may hold it.

One broker per (local user, SSH destination). The user is implicit: the files
live in the user's own 0700 state directory. The destination is the target
as written (`user@host` or an ~/.ssh/config alias) together with the text of
~/.ssh/config, which is what resolves it (user, host, port, jump chain):
hashing both needs no SSH code, so a client finds a live broker without
importing paramiko. Two aliases of one server get a broker each; editing
~/.ssh/config starts a new one (the old one idles out). The package version is
hashed too: a broker answers the requests of the version that started it, so
after an upgrade the next command starts its own instead of asking an old one
for calls it does not know.

Files, in `<state dir>/brokers/` (names kept short: a Unix socket path has
at most 107 bytes):
  <id>.lock   the broker's `locks.FileLock` for its whole life; once it serves, the record also holds the
              target, the address to connect to and when it logged in
  <id>.key    the authkey clients prove they know (0600); only the same user can read it
  <id>.sock   the Unix socket (POSIX; on Windows a named pipe whose name is in the lock record)
  <id>.log    the broker's log (kept after it exits, like the keeper's; the one before as <id>.log.1)
  <id>.tunnels  the keeper locks of the tunnels it keeps (JSON list, 0600): a broker that died leaves it, and
              the next one restores those tunnels
"""

from __future__ import annotations

import os
import sys

from .. import statefiles
from .._version import __version__
from ..hosts.local import LocalHost
from ..locks import FileLock, LockOwner
from ..processes import own_uid, process_cmdline, process_uid
from ..records import NamedTuple
from ..tunnels.lock import BROKER_MARKER as MARKER

DIRNAME = "brokers"
ID_LENGTH = 16
MAX_SOCKET_PATH = 107  # bytes of a Unix socket's path (sun_path, its terminating NUL excluded)
PARTIAL_GRACE = 5.0  # an unparsable lock younger than this is a create still being written


def broker_dir() -> str:
    return os.path.join(statefiles.base_dir(), DIRNAME)


def destination_id(target: str) -> str:
    """The broker's name for `target`: a hash (BLAKE2b) of it, of the ~/.ssh/config text that resolves it and of
    our version."""
    try:
        with open(os.path.join(os.path.expanduser("~"), ".ssh", "config"), "rb") as file:  # not ssh.config:
            ssh_config = file.read()  # that would load paramiko
    except OSError:
        ssh_config = b""
    return _name_of(b"\0".join((__version__.encode(), target.encode(), ssh_config)))


def _name_of(data: bytes) -> str:
    return statefiles.name_digest(data, ID_LENGTH)


class BrokerFiles(NamedTuple):
    """The paths of one broker's files (strings: a command that finds its broker imports no pathlib)."""

    lock: str
    key: str
    socket: str
    log: str
    tunnels: str

    @classmethod
    def of(cls, name: str, directory: str | os.PathLike[str] | None = None) -> BrokerFiles:
        base = os.path.join(directory or broker_dir(), name)
        return cls(*(base + suffix for suffix in (".lock", ".key", ".sock", ".log", ".tunnels")))

    @classmethod
    def for_target(cls, target: str) -> BrokerFiles:
        return cls.of(destination_id(target))

    @property
    def name(self) -> str:
        """The broker's id (destination_id), its files' common name."""
        return os.path.splitext(os.path.basename(self.lock))[0]

    @property
    def directory(self) -> str:
        return os.path.dirname(self.lock)

    def check_trusted(self) -> None:
        """Refuse a broker directory, lock or key another user could have planted (statefiles.check_trusted):
        the lock names where we connect and the key is the secret we prove there."""
        statefiles.check_trusted(self.directory, "broker directory")
        statefiles.check_trusted(self.lock, "broker lock")
        statefiles.check_trusted(self.key, "broker key")

    def address(self, token: str) -> str:
        """Where the broker listens: the socket file, or on Windows a pipe name no one can guess. A socket
        path longer than a Unix socket may have (a deep state directory) moves to a private directory of
        ours in the temporary directory (`short_socket_dir`); the lock records where."""
        if sys.platform == "win32":
            return rf"\\.\pipe\remote-http-launcher-{self.name}-{token}"
        if len(os.fsencode(self.socket)) <= MAX_SOCKET_PATH:
            return self.socket
        return os.path.join(short_socket_dir(), os.path.basename(self.socket))


def short_socket_dir() -> str:
    """`<tmp>/rhl-<uid>` (0700 and ours, checked as the state directory is), for sockets whose path in the
    state directory is too long. Without user IDs (the POSIX-stripped test run) it is named by the state
    directory instead."""
    uid = own_uid()
    import tempfile  # only for such a path

    name = str(uid) if uid is not None else _name_of(str(broker_dir()).encode())
    directory = os.path.join(tempfile.gettempdir(), f"rhl-{name}")
    statefiles.ensure_private_dir(directory)
    statefiles.check_trusted(directory, "broker socket directory")
    return directory


def is_broker(owner: LockOwner) -> bool:
    """Still the same process, of this user, and one of our brokers (never signal or trust anything else).

    Where there are no UIDs (Windows) the client checks that the pipe it reached is served by this
    process (broker/client.py)."""
    if not owner.same_process():
        return False
    mine = own_uid()
    if mine is not None and process_uid(owner.pid) != mine:
        return False
    cmdline = process_cmdline(owner.pid)
    if cmdline is None:
        return sys.platform == "win32"  # no command line to read there: the start time has to do
    return MARKER in cmdline


class BrokerLock(FileLock):
    """`<id>.lock`: held by the broker from before its login until it exits."""

    def __init__(self, files: BrokerFiles) -> None:
        super().__init__(LocalHost(), files.lock)
        self.files = files

    def break_if_gone(self, raw: bytes | None) -> bool:
        """Break the lock if its broker is gone; True when the caller may try to acquire again."""
        return self.break_if_stale(raw, is_broker, PARTIAL_GRACE)


def live_brokers(directory: str | os.PathLike[str] | None = None) -> list[tuple[BrokerFiles, LockOwner]]:
    """Every broker whose lock names a live broker process (`connections`, `disconnect`)."""
    found = []
    directory = os.fspath(directory or broker_dir())
    statefiles.check_trusted(directory, "broker directory")
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(".lock"))
    except FileNotFoundError:
        names = []
    for name in names:
        files = BrokerFiles.of(name[:-len(".lock")], directory)
        files.check_trusted()
        owner = BrokerLock(files).read()[1]
        if owner is not None and is_broker(owner):
            found.append((files, owner))
    return found
