"""A daemon's head start: connecting to the SSH server's port while it still imports paramiko.

A tunnel keeper spends 100-150 ms starting Python, importing paramiko and
reading ~/.ssh/config before its first packet; over a slow link the TCP
handshake and the server's greeting then take about two round trips more.
So the address of the last direct login to a target is remembered
(`remember`, after the login), keyed by the ssh config files it was read
from (path, size and mtime); the command that starts the next keeper for
that target looks it up (`guess`), and the keeper starts connecting to it on
a thread before its heavy imports (`dial`).

A guess never decides where we log in: when the login has resolved its
endpoint the usual way, `take` hands over the early socket only if it is for
that same address, and closes any other unused. A stale guess (a file an
Include glob newly matches, an environment variable in HostName) costs one
TCP connection that sends nothing. Configs with `Match exec` (whose answer can
change with no file changing) and logins through ProxyCommand or ProxyJump
(not plain TCP) are never remembered.

Imports nothing heavy: the keeper runs it before anything else.
"""

from __future__ import annotations

import os
import socket

from .. import statefiles
from ..background import Background
from ..errors import LauncherError

CACHE_NAME = "ssh-endpoints.json"  # in <state dir>/cache, sealed as the parse cache is (statefiles.write_sealed)
MAX_TARGETS = 64  # remembered targets; the oldest entries go first
DIAL_FLAG = "--dial"  # HOST PORT on a daemon's command line (`dial_arguments`)
DIAL_HELP = "where the last login to this target connected: connected to ahead, used only if the login " \
            "resolves to it (ssh/dialahead.py)"
DIAL_TIMEOUT = 15.0  # the early connect's own limit; `take` waits only as long as the login's ConnectTimeout

Address = tuple[str, int]
Signature = list[list[object]]  # [path, size, mtime_ns] per file; size and mtime None for a missing file
_pending: list[tuple[Address, Background[socket.socket]]] = []  # dials nobody took yet


def cache_path() -> str:
    return os.path.join(statefiles.base_dir(), "cache", CACHE_NAME)


def signature(files: list[str]) -> Signature:
    """What `remember` keys an address by: each file's path, size and modification time."""
    found: Signature = []
    for path in files:
        try:
            info = os.stat(path)
        except OSError:
            found.append([path, None, None])
        else:
            found.append([path, info.st_size, info.st_mtime_ns])
    return found


def _entries() -> dict[str, object]:
    try:
        data = statefiles.decode(statefiles.read_sealed(cache_path(), "ssh endpoint cache"))
    except (LauncherError, OSError):
        return {}
    return data or {}


def guess(target: str) -> Address | None:
    """The address the last direct login to `target` connected to, if the ssh config files it was read from
    are as they were then."""
    entry = _entries().get(target)
    if not isinstance(entry, dict):
        return None
    address, files = entry.get("address"), entry.get("files")
    if not (isinstance(address, list) and len(address) == 2 and isinstance(address[0], str)
            and statefiles.is_port(address[1]) and isinstance(files, list)
            and all(isinstance(item, list) and item and isinstance(item[0], str) for item in files)):
        return None
    return (address[0], address[1]) if signature([item[0] for item in files]) == files else None


def remember(target: str, address: Address, files: list[str]) -> None:
    """Note where a direct login to `target` connected (`files`: the ssh config files read for it); written
    only when that changed. A failed write only costs the next keeper its head start."""
    entries = _entries()
    entry = {"address": list(address), "files": signature(files)}
    if entries.get(target) == entry:
        return
    entries.pop(target, None)
    entries[target] = entry  # last in the file's order: the most recent
    for stale in list(entries)[:-MAX_TARGETS]:
        del entries[stale]
    try:
        statefiles.write_sealed(cache_path(), statefiles.encode(entries))
    except (LauncherError, OSError):
        pass


def dial_arguments(target: str) -> list[str]:
    """`--dial HOST PORT` for the command line of a daemon that will log in to `target` (`guess`), or []."""
    address = guess(target)
    return [] if address is None else [DIAL_FLAG, address[0], str(address[1])]


def dial_from_arguments(argv: list[str]) -> None:
    """In a daemon's `__main__`, before its heavy imports: start the connect `dial_arguments` asked for."""
    if DIAL_FLAG in argv[:-2]:
        where = argv.index(DIAL_FLAG)
        if argv[where + 2].isdigit():
            dial((argv[where + 1], int(argv[where + 2])))


def dial(address: Address) -> None:
    """Start connecting to `address` on a thread; `take` collects the socket."""
    _pending.append((address, Background(lambda: socket.create_connection(address, timeout=DIAL_TIMEOUT),
                                         socket.socket.close)))


def take(address: Address, timeout: float) -> socket.socket | None:
    """The early connection to `address`, waited for up to `timeout` seconds; None when none was started for
    it (one to any other address is closed). Its failure is raised as a connect of our own would raise it."""
    found = None
    while _pending:
        dialled, early = _pending.pop()
        if dialled == address and found is None:
            found = early
        else:
            early.abandon()
    if found is None:
        return None
    try:
        return found.result(timeout)
    except TimeoutError:
        found.abandon()
        raise


def discard() -> None:
    """Close any early connection nobody took (the login went another way)."""
    while _pending:
        _pending.pop()[1].abandon()


__all__ = ["CACHE_NAME", "DIAL_FLAG", "DIAL_HELP", "DIAL_TIMEOUT", "MAX_TARGETS", "Address", "Signature",
           "cache_path", "dial", "dial_arguments", "dial_from_arguments", "discard", "guess", "remember",
           "signature", "take"]
