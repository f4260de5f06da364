"""Claiming a key's tunnel: take its keeper lock, or reuse (or wait for) the live holder that keeps it.

The holder is a keeper process or a connection broker (the lock's record says
which). A holder whose tunnel answers is reused; one restoring its link (for
as long as it is the same process, PID and start time: the "until" in its
record would be read on another clock), or that may not have noticed its link
went silent yet, is waited for (for as long as a claim waits for a starting
holder); one waiting for a login it cannot ask
for, or whose tunnel stays silent, is ended through `stop` (its successor
logs in asking where this run asks, and takes the same local ports), which the host of the claim
chooses (a broker asks a fellow broker; a process signals only a verified
keeper). Before any signal the holder is checked again: same start time, and a
command line naming our keeper module and the key (`lock.is_keeper`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from .. import handshake
from ..errors import TunnelError
from ..processes import terminate
from ..service import KILL_WAIT, STOP_TIMEOUT
from .lock import KeeperLock, is_keeper, reconnecting_until, served_payload, silence_bound, waiting_for_login

if TYPE_CHECKING:
    from ..config import Config
    from ..locks import LockOwner
    from ..progress import Progress
    from ..statefiles import ClientPayload

POLL = 0.05
WAIT_POLL = 0.1
STARTING_GRACE = 60.0  # beyond the startup timeout, for a login (prompts) in the other run
RECONNECT_POLL = 0.5  # how often a run tries the tunnel of a holder that is restoring its link
SILENCE_GRACE = 5.0  # beyond the time a holder takes to notice a silent link, for it to say so in its lock

#: Ends the tunnel a silent holder keeps: True once it is ended, False when this claim may not end it.
StopHolder = Callable[["LockOwner", str], bool]
#: True when the holder restores its link now (by its own state, which may be ahead of its lock's record).
Restoring = Callable[["LockOwner"], bool]


class Claim(NamedTuple):
    """What taking the keeper lock found: a live holder's payload to reuse, or the payload of the holder
    we replace (its local ports are taken again when free, for clients that hold them)."""

    reused: ClientPayload | None
    previous: ClientPayload | None


def stop_owner(owner: LockOwner, key: str, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM a keeper process (it cleans up), SIGKILL after `timeout`; True once it is gone.

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


def stop_process_holder(owner: LockOwner, key: str) -> bool:
    """A keeper process is stopped; a broker's tunnel is the broker's to end (False): it decides, with the
    state it has, whether its tunnel is lost or being restored."""
    return False if owner.data.get("broker") is not None else stop_owner(owner, key)


def claim(lock: KeeperLock, config: Config, progress: Progress, stop: StopHolder = stop_process_holder,
          restoring: Restoring = lambda owner: False, *, can_login: bool = True) -> Claim:
    """Take the keeper lock, or find a live holder that answers (or will: one restoring its link is waited for).

    `restoring` lets the holder itself decide (a broker claiming for one of its own tunnels): the lock's
    record trails the moment its link died. Without `can_login` (nowhere to ask), a holder waiting for a
    login is left alone: replacing it would lose its local ports to a login that cannot succeed."""
    key = lock.key
    deadline = time.monotonic() + config.startup_timeout + STARTING_GRACE
    waiting = ""
    previous: ClientPayload | None = None
    suspect_since: float | None = None  # when a holder's tunnel first gave no answer
    while not lock.acquire_for_key():
        raw, owner = lock.read()
        payload = served_payload(owner) if owner is not None else None
        previous = payload or previous
        if lock.break_if_gone(raw):
            continue
        if owner is not None and payload is not None:
            tried = time.monotonic()
            if handshake.payload_answers(payload, config.handshake):
                return Claim(payload, None)
            silent = time.monotonic() - tried >= handshake.HANDSHAKE_TIMEOUT  # no answer at all, not a refusal
            owner = lock.read()[1]  # again: it may have noticed the lost link while we tried it
            # Identity, not the record's clock: a holder that said it restores its link, and is still that
            # process (break_if_gone verified it is our keeper), restores it or ends (releasing the lock).
            live = owner is not None and owner.same_process()
            if owner is not None and live and waiting_for_login(owner) and not restoring(owner):
                if not can_login:
                    raise TunnelError(f"{key}: tunnel keeper {owner.pid} waits for a login to {config.ssh_target} "
                                      "(a password or one-time code) to restore its tunnel; run this where it "
                                      "can ask (a terminal, or prompt=)", key=key, step="tunnel keeper")
                progress.phase(f"stopping tunnel keeper {owner.pid}: it waits for a login; this run logs in")
                if not stop(owner, key):
                    raise TunnelError(f"{key}: connection broker {owner.pid} waits for a login to restore its "
                                      f"tunnel; run a command for {config.ssh_target} where it can ask",
                                      key=key, step="tunnel keeper")
                continue
            if owner is not None and live and (restoring(owner) or reconnecting_until(owner) is not None):
                if time.monotonic() > deadline:
                    raise TunnelError(f"{key}: tunnel keeper {owner.pid} is still restoring its link to "
                                      f"{config.ssh_target} (it keeps the local ports); try again once the host "
                                      "is reachable", key=key, step="tunnel keeper")
                waiting = _phase(progress, waiting, f"tunnel keeper {owner.pid} is restoring its link; waiting")
                time.sleep(RECONNECT_POLL)
                continue
            # A silent tunnel may be a silent link that the holder has not noticed yet: give it that long.
            bound = silence_bound(owner) if owner is not None and live and silent else None
            suspect_since = suspect_since or tried
            if owner is not None and bound is not None and time.monotonic() < suspect_since + bound + SILENCE_GRACE:
                waiting = _phase(progress, waiting, f"tunnel keeper {owner.pid} does not answer; waiting for it "
                                 "to check its link")
                continue
            if owner is not None:
                progress.phase(f"stopping tunnel keeper {owner.pid}: its tunnel does not answer")
                if not stop(owner, key):
                    raise TunnelError(f"{key}: connection broker {owner.pid} keeps its tunnel, which does not "
                                      f"answer; end it with `remote-http-launcher disconnect {config.ssh_target}` "
                                      "and try again", key=key, step="tunnel keeper")
            continue
        if time.monotonic() > deadline:
            pid = f" (pid {owner.pid})" if owner else ""
            raise TunnelError(f"{key}: another run{pid} has been starting the tunnel keeper for too "
                              f"long; remove {lock.path} if no remote-http-launcher is running",
                              key=key, step="tunnel keeper")
        waiting = _phase(progress, waiting, "another run is starting the tunnel; waiting")
        time.sleep(WAIT_POLL)
    return Claim(None, previous)


def _phase(progress: Progress, shown: str, text: str) -> str:
    """Show `text` once (a new phase), then tick; the phase now shown."""
    if text != shown:
        progress.phase(text)
    progress.tick()
    return text
