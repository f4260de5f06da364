"""At most one tunnel per key: the keeper lock, and who holds it.

The key's keeper (a keeper process, or a connection broker keeping the key's
tunnel among others) holds `<client dir>/<key>.keeper.lock` (a
`locks.FileLock` on this machine) for the tunnel's whole life; once the tunnel
is up the lock also holds the client payload it serves, and while its link is
down, until when it restores it and whether it waits for a login only a command
can make (a password, a one-time code). A lock whose holder is not one of our keepers
for the key (gone, or its PID now another process) is broken.
"""

from __future__ import annotations

import sys

from ..clientfile import keeper_lock_path
from ..hosts.local import LocalHost
from ..locks import FileLock, LockOwner
from ..processes import process_cmdline

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from typing import Any

    from ..statefiles import ClientPayload, PathArg

#: The command lines of our tunnels' holders: `python -m` of the keeper and of the broker.
MARKER = "remote_http_launcher.keeper"
BROKER_MARKER = "remote_http_launcher.broker"
RECONNECTING = "reconnecting_until"
WAITING_FOR_LOGIN = "waiting_for_login"
CONFIG = "config"
SILENCE_BOUND = "notices_silence_within"
#: What a keeper's link is doing (`status`, `connections`).
LINK_UP = "up"
LINK_RECONNECTING = "reconnecting"
LINK_WAITING_FOR_LOGIN = "waiting for login"
PARTIAL_GRACE = 5.0  # an unparsable lock younger than this is a create still being written


def is_keeper(owner: LockOwner, key: str) -> bool:
    """Still the same process, and one of our keepers for this key: a keeper process, or a connection
    broker keeping the key's tunnel among others . Never signal anything else."""
    if not owner.same_process():
        return False
    cmdline = process_cmdline(owner.pid)
    if cmdline is None:
        return sys.platform == "win32"  # no command line to read there: the start time has to do
    if BROKER_MARKER in cmdline:
        return owner.data.get("key") == key and isinstance(owner.data.get("broker"), str)
    return MARKER in cmdline and key in cmdline


def reconnecting_until(owner: LockOwner) -> float | None:
    """Until when (a `time.time()`) a keeper that lost its link tries to restore it; None when it is up."""
    return _number(owner, RECONNECTING)


def waiting_for_login(owner: LockOwner) -> bool:
    """True when the keeper's re-login needs an answer it cannot ask for: a command must log in for it."""
    return owner.data.get(WAITING_FOR_LOGIN) is True


def link_state(owner: LockOwner) -> str:
    """What a live keeper's record says of its link: LINK_UP, LINK_RECONNECTING or LINK_WAITING_FOR_LOGIN."""
    if waiting_for_login(owner):
        return LINK_WAITING_FOR_LOGIN
    return LINK_RECONNECTING if reconnecting_until(owner) is not None else LINK_UP


def silence_bound(owner: LockOwner) -> float | None:
    """Seconds after which the keeper notices that its link went silent (then it reconnects); None: unknown."""
    return _number(owner, SILENCE_BOUND)


def _number(owner: LockOwner, name: str) -> float | None:
    value = owner.data.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def recorded_config(owner: LockOwner) -> dict[str, Any] | None:
    """The config a broker recorded with the tunnel it kept (config_json's mapping); None: not recorded."""
    config = owner.data.get(CONFIG)
    return config if isinstance(config, dict) else None


def served_payload(owner: LockOwner) -> ClientPayload | None:
    """The payload a keeper published once its tunnel was up; None while it is still starting."""
    payload = owner.data.get("payload")
    return payload if isinstance(payload, dict) else None  # type: ignore[return-value]


class KeeperLock(FileLock):
    """`<key>.keeper.lock` beside the client connection file; `broker`: the id (lock path) of the broker
    that holds it, recorded so that `stop` asks that broker instead of signalling it."""

    def __init__(self, client_path: PathArg, key: str, broker: str | None = None) -> None:
        super().__init__(LocalHost(), keeper_lock_path(client_path))
        self.key = key
        self.broker = broker
        self.silence_bound: float | None = None  # set by the keeper holding the lock, once connected
        self.published: ClientPayload | None = None  # the payload we serve, once published
        self.config: dict[str, Any] | None = None  # a broker's: the config, so a broker after it can restore it

    def holder(self) -> dict[str, str]:
        """What the lock's record says about its holder, besides the process (`FileLock.record`)."""
        return {"key": self.key} if self.broker is None else {"key": self.key, "broker": self.broker}

    def acquire_for_key(self) -> bool:
        return self.acquire(**self.holder())

    def publish(self, payload: ClientPayload, reconnecting_until: float | None = None, *,
                waiting_for_login: bool = False) -> None:
        """Record the payload this keeper serves, so a run that lost its client file can reuse it, and
        while its link is down, until when it tries to restore it (a `time.time()`) and whether it waits
        for a login; `silence_bound`, when set, is how long the keeper's link may be silent before it
        notices."""
        extra: dict[str, Any] = {} if reconnecting_until is None else {RECONNECTING: reconnecting_until}
        if waiting_for_login:
            extra[WAITING_FOR_LOGIN] = True
        if self.silence_bound is not None:
            extra[SILENCE_BOUND] = self.silence_bound
        if self.config is not None:
            extra[CONFIG] = self.config
        self.rewrite(**self.holder(), payload=payload, **extra)
        self.published = payload

    def reconnecting(self, until: float | None, *, waiting_for_login: bool = False) -> None:
        """Say in the record until when we try to restore our link (None: it is up again), so runs that meet
        our tunnel failing meanwhile wait for us (claim.claim) instead of replacing us, and whether we wait
        for a login (`status` shows it)."""
        if self.held and self.published is not None:
            self.publish(self.published, until, waiting_for_login=waiting_for_login)

    def break_if_gone(self, raw: bytes | None) -> bool:
        """Break the lock if its keeper is gone; True when the caller may try to acquire again."""
        return self.break_if_stale(raw, lambda owner: is_keeper(owner, self.key), PARTIAL_GRACE)
