"""The one watch over kept tunnels: is each service still there, and is the SSH link still up?

A `Link` is the SSH connection that one or more tunnels ride on (a keeper
process's own connection with its one tunnel, or a broker's shared connection
with all of its tunnels). Every `watchdog_interval` seconds `Link.watch`
checks a tunnel's service (its PID and start time; a batch job: the job, with
its scheduler); SSH keep-alives at the shortest interval keep idle links (and
NAT mappings) alive. A check that hangs (a link that died silently) is cut off
by closing the transport. A lost link is restored once for all its tunnels,
without prompts, with backoff capped at MAX_BACKOFF, for as long as its
tunnels' `reconnect_timeout` allows (by default without limit: a laptop may
sleep for hours): the local ports stay bound meanwhile (a local connection is
refused at once, so clients retry the same address), and each tunnel's keeper
lock says until when, so other runs wait for the link instead of replacing the
tunnel (claim.claim). A re-login the server refuses without an answer we
cannot give (a password, a one-time code) waits for a login handed to the link
by a command that can ask (`hand`: the broker's) instead; the locks say so.
After a restore, each tunnel's next check closes it if its service is gone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from .. import statefiles
from ..errors import AuthenticationError, HostError, HostKeyError, LauncherError
from ..hosts.ssh import SSHHost
from ..service import Service, ended, is_ours, job_of
from .lock import LINK_RECONNECTING, LINK_UP, LINK_WAITING_FOR_LOGIN
from .renew import Renewal

if TYPE_CHECKING:
    from ..config import Config
    from ..statefiles import ClientPayload, ServerState
    from .forward import Tunnel
    from .lock import KeeperLock

T = TypeVar("T")
MIN_CHECK_TIMEOUT = 10.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 4.0  # seconds between attempts at most: a link that is back is used again within them
#: Without a limit, each lock says "reconnecting until now + RENEW_HORIZON", renewed at every attempt: a
#: run that finds the record older than that (plus claim's grace) knows the holder stopped trying.
RENEW_HORIZON = 60.0
HAND_WAIT = 30.0  # seconds a handed login waits for the restore under way to take it
LINK_POLL = 0.2  # seconds between looks at whether the connection is still open (a local check)
log = logging.getLogger("remote_http_launcher.tunnel")


class Kept(NamedTuple):
    """One key's tunnel on a link: its forwards, the lock that says who keeps it, and when to end it."""

    config: Config
    key: str
    client_path: Path
    lock: KeeperLock
    tunnel: Tunnel
    done: threading.Event
    previous: ClientPayload | None  # the payload of the holder this tunnel replaces: its local ports are reused


class Link:
    """An SSH connection and the tunnels kept on it; `host` follows reconnects.

    `lock` is held for every service check and while the host is swapped
    (a broker serves its clients' SFTP calls under it too: one SFTP session).
    `idle_keepalive`: keep-alives when no tunnel asks for shorter ones (a broker
    waiting for commands); `shells`: keep a few shells open on the server for
    the commands the link serves (a broker's).
    """

    def __init__(self, target: str, host: SSHHost, *, idle_keepalive: float | None = None,
                 shells: bool = False) -> None:
        self.target = target
        self.host = host
        self.lock = threading.Lock()
        self.kept: dict[str, Kept] = {}
        self.renewals: dict[str, Renewal | None] = {}  # each watched tunnel's walltime renewal (tunnels/renew.py)
        self.idle_keepalive = idle_keepalive
        self.shells = shells
        self._restoring = threading.Lock()
        self._state = threading.Lock()  # guards `host` swaps and `restoring_until` against `lost`
        self.restoring_until: float | None = None  # set from the moment the link is known lost until restored
        self.waiting_for_login = False  # a re-login needs an answer: restored by a login handed to us (`hand`)
        self._handed: SSHHost | None = None
        self._changed = threading.Condition(self._state)  # a login handed, or the link restored
        self.gave_up = False
        self.why_not_restored = ""  # once `restore` failed: why
        if shells:
            host.keep_shells()
        self.keepalive()

    def watch(self, kept: Kept, state: ServerState) -> str:
        """Block until `kept`'s service is gone, its `done` is set or the link cannot be restored; why."""
        interval = kept.config.watchdog_interval
        renewal = self.renewals[kept.key] = Renewal.of(kept)
        while True:
            self._pause(interval, kept.done)
            if kept.done.is_set():
                return "its tunnel was ended"
            host = self.host
            try:
                found = self._service_alive(host, kept, state, interval)
                if renewal is not None:
                    found, state = self._checked(host, interval, partial(renewal.step, host, found, state))
            except HostError as exc:
                log.info("%s: link to %s lost (%s)", kept.key, self.target, exc)
                if not self.restore(host):
                    return f"link to {self.target} lost and not restored ({self.why_not_restored})"
                continue
            if found is None:
                return f"{ended(state)} ({host.name})"
            if found is not state:
                self._follow(kept, found)
                state = found

    def _pause(self, interval: float, done: threading.Event) -> None:
        """One interval, cut short when the connection closes (its alive check closes it once the server
        stops answering): reconnecting at once also tells other runs at once to wait for us."""
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0 and self.host.transport.is_active():
            if done.wait(min(LINK_POLL, left)):
                return

    def _service_alive(self, host: SSHHost, kept: Kept, state: ServerState, interval: float) -> ServerState | None:
        """`state` while its service lives, a batch job's new record once a requeued job's new run reported
        (`_follow`), None once the service is gone."""
        return self._checked(host, interval, partial(_look, host, kept, state))

    def _checked(self, host: SSHHost, interval: float, check: Callable[[], T]) -> T:
        """`check`'s answer, under the link's lock, cut off by closing the transport when it hangs."""
        transport = host.transport
        timer = threading.Timer(max(MIN_CHECK_TIMEOUT, 2 * interval), transport.close)
        timer.daemon = True
        timer.start()
        try:
            with self.lock:
                found = check()
        finally:
            timer.cancel()
        if not transport.is_active():
            # The answer may be an artefact of the dying link.
            raise HostError("connection lost", host=host.name, step="watchdog")
        return found

    def _follow(self, kept: Kept, state: ServerState) -> None:
        """Forward the same local ports to a requeued job's new run, and publish its payload."""
        previous = kept.lock.published or kept.previous
        log_path = Path(str((previous or {}).get("keeper_log", "")))
        payload: ClientPayload = kept.tunnel.reforward(Service(self.host, kept.config, kept.key), state, previous,
                                                       log_path)  # type: ignore[assignment]
        log.info("%s: the job's new run is on %s port %s; forwarding there", kept.key, state.data.get("node"),
                 state.port)
        statefiles.write_atomic(kept.client_path, statefiles.encode(payload))
        kept.lock.publish(payload)

    def restore(self, seen: SSHHost) -> bool:
        """Log in again (once for all tunnels: `seen` is the host the caller found dead); False when the
        link could not be restored within the limit, or the server's host key changed."""
        with self._restoring:
            if self.host is not seen:
                return self.host.transport.is_active()  # restored (or given up) by another tunnel's watch
            self._announce()  # before local connections start failing at once (unless `lost` did already)
            log.info("link to %s lost; reconnecting", self.target)
            seen.close()
            host = self._reconnect()
            if host is not None and self.shells:
                try:
                    host.keep_shells()
                except LauncherError as exc:  # the new link failed at once
                    log.info("reconnected link lost again: %s", exc)
                    self.why_not_restored = f"the new link failed at once: {exc}"
                    host.close()
                    host = None
            with self._changed:
                self.waiting_for_login = False
                self.restoring_until = None
                if host is None:
                    self.gave_up = True
                    self._tell(None, None)
                    self._changed.notify_all()
                    return False
                with self.lock:
                    self.host = host
                    self._tell(None, host)
                self._changed.notify_all()
            self.keepalive()
            return True

    def _reconnect(self) -> SSHHost | None:
        """Log in again without prompts, with backoff, until the limit (`reconnect_timeout`; none by
        default), or take the login a command hands us (`hand`); None when the limit passed or the host key
        changed. A refused login waits for a handed one (only a command can ask the user)."""
        limit = self.limit()
        deadline = None if limit is None else time.monotonic() + limit
        delay = FIRST_BACKOFF
        while True:
            if not self.waiting_for_login:
                try:
                    host = SSHHost.connect(self.target, interactive=False)
                except HostKeyError as exc:
                    log.info("reconnect refused, giving up: %s", exc)  # never retried: it is not our server
                    self.why_not_restored = f"the host key changed: {exc}"
                    return None
                except AuthenticationError as exc:
                    log.info("reconnect needs a login we cannot answer; waiting for a command to hand one: %s",
                             exc)
                    with self._state:
                        self.waiting_for_login = True
                except HostError as exc:
                    log.info("reconnect failed: %s", exc)
                else:
                    log.info("reconnected to %s", self.target)
                    return host
            with self._changed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.why_not_restored = f"reconnect_timeout {limit:g} s passed"
                    return None
                self._announce_locked()  # renews the locks' record: we still try
                pause = RENEW_HORIZON / 2 if self.waiting_for_login else delay
                self._changed.wait_for(lambda: self._handed is not None,
                                       pause if remaining is None else min(pause, remaining))
                handed, self._handed = self._handed, None
            if handed is not None:
                log.info("logged in to %s again with a login a command handed us", self.target)
                return handed
            delay = min(2 * delay, MAX_BACKOFF)

    def hand(self, host: SSHHost) -> bool:
        """Restore the link with `host`, a login a command made with the user's answers; True once the
        link rides on it, False when the link needed none (then `host` is closed)."""
        with self._changed:
            if not self.waiting_for_login or self._handed is not None:
                host.close()
                return False
            self._handed = host
            self._changed.notify_all()
            taken = self._changed.wait_for(lambda: self.host is host or self.gave_up, HAND_WAIT)
        return taken and self.host is host

    def state(self) -> str:
        """What the link is doing (`connections`): up, reconnecting or waiting for a login."""
        with self._state:
            if self.waiting_for_login:
                return LINK_WAITING_FOR_LOGIN
            return LINK_RECONNECTING if self.restoring_until is not None else LINK_UP

    def lost(self) -> bool:
        """True while the link is down or being restored: its tunnels are kept for the restore, never replaced.

        A link found dead before its watch noticed is announced as restoring here, so every lock says so at
        once (the watch's restore follows)."""
        with self._state:
            if self.restoring_until is None and not self.gave_up and not self.host.transport.is_active():
                self._announce_locked()
            return self.restoring_until is not None

    def _announce(self) -> None:
        with self._state:
            self._announce_locked()

    def _announce_locked(self) -> None:
        limit = self.limit()
        until = time.time() + (RENEW_HORIZON if limit is None else limit)
        if self.restoring_until is not None and limit is not None:
            until = self.restoring_until  # a limit counts from the loss, not from each attempt
        self.restoring_until = until
        self._tell(until, None)

    def _tell(self, until: float | None, host: SSHHost | None) -> None:
        """Each tunnel's forwards use `host` (None: fail at once); each lock says until when we reconnect,
        and whether we wait for a login."""
        for kept in list(self.kept.values()):
            kept.tunnel.transport = None if host is None else host.transport
            kept.lock.reconnecting(until, waiting_for_login=self.waiting_for_login)

    def limit(self) -> float | None:
        """How long a lost link is retried: the longest `reconnect_timeout` of its tunnels; None (the
        default) without limit."""
        limits = [kept.config.reconnect_timeout for kept in list(self.kept.values())]
        return None if not limits or None in limits else max(limit for limit in limits if limit is not None)

    def silence_bound(self) -> float:
        """Seconds within which we notice that the link went silent: its alive check closes it, and we look
        every LINK_POLL (then we reconnect, and the tunnels' locks say so)."""
        return self.host.connection.endpoint.silence_bound + LINK_POLL

    def keepalive(self) -> None:
        """Keep-alives at the shortest of `idle_keepalive`, the tunnels' intervals and ServerAliveInterval."""
        intervals = self._intervals() + ([self.idle_keepalive] if self.idle_keepalive is not None else [])
        configured = self.host.connection.endpoint.option("serveraliveinterval")  # ~/.ssh/config's, if shorter
        if configured.isdigit() and int(configured) > 0:
            intervals.append(int(configured))
        self.host.transport.set_keepalive(max(1, round(min(intervals, default=1))))

    def _intervals(self) -> list[float]:
        return [kept.config.watchdog_interval for kept in list(self.kept.values())]

    def end(self, kept: Kept, why: str) -> None:
        """Close `kept`'s forwards, remove the client file naming them (only ours) and release its lock."""
        log.info("%s: closing the tunnel: %s", kept.key, why)
        kept.done.set()
        renewal = self.renewals.pop(kept.key, None)
        if renewal is not None and self.host.transport.is_active():
            with self.lock:
                renewal.abandon(self.host)
        kept.tunnel.close()
        payload = statefiles.read_payload(kept.client_path)
        if payload is not None and payload.get("keeper_pid") == os.getpid():
            statefiles.remove(kept.client_path)
        kept.lock.release()

    def close(self) -> None:
        self.host.close()


def _look(host: SSHHost, kept: Kept, state: ServerState) -> ServerState | None:
    """The service's check: `state` while it lives; None once it is gone. A batch job that was requeued is
    still the service: while it waits or its new run starts, the client file (naming the dead run) is
    removed; once the new run recorded its port, that record (the caller forwards to it)."""
    job = job_of(state)
    if job is None:
        return state if is_ours(host, state) else None
    from ..schedulers import ENDED, RUNNING, moved, recorded_run

    info = job.query(host)
    if info.state == ENDED:
        return None
    if not moved(info, state.data):
        return state
    current = Service(host, kept.config, kept.key).read_state()
    if current is None or job_of(current) != job:
        return None  # the key's record names another job now: ours is no longer its service
    if info.state == RUNNING and recorded_run(current.data) == info.restarts and current.status == "running" \
            and current.port is not None:
        return current
    payload = statefiles.read_payload(kept.client_path)
    if payload is not None and payload.get("keeper_pid") == os.getpid():
        log.info("%s: job %s was requeued; waiting for its new run", kept.key, job.id)
        statefiles.remove(kept.client_path)
    return state
