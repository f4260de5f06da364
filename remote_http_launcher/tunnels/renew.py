"""Walltime continuity (`scheduler.renew_before`): a batch job's successor takes over its tunnel.

The holder of a job's tunnel (a keeper process or a broker) looks at the
job's time left; `renew_before` seconds before the walltime ends it submits
the key's next job under files of its own (`Service.next_run`: the running
job's record is never touched), and once that job runs and passes the
handshake, it points the tunnel's forwards at it without closing them (the
same local ports; `Tunnel.redirect`), renames the successor's record and
job script over the key's, rewrites the client file, and sends the old job
SIGTERM (then cancels it outright after STOP_TIMEOUT).

A successor still queued when the old job ends: a copy of its queued record
becomes the key's (`status` says "queued successor: REASON"), the client file naming the dead
job goes, the local ports stay bound, and the hand-over follows once it runs.
A successor that ends before it served is not replaced: the service then
ends with its walltime. Each step is one short look, made after the watch's
own service check, so nothing here blocks the watch.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import handshake, statefiles, stock
from ..errors import LauncherError
from ..launcher import Launcher
from ..service import STOP_TIMEOUT, Service, job_of

if TYPE_CHECKING:
    from ..config import Config
    from ..hosts import Host
    from ..schedulers import Job
    from ..statefiles import ClientPayload, ServerState
    from .forward import Tunnel
    from .lock import KeeperLock

RECHECK = 60.0  # seconds between looks at the job's time left while no renewal is due
LOG_END = 2**62  # an offset past any log's end: Host.read_from answers with the log's size
log = logging.getLogger("remote_http_launcher.tunnel")


class Kept(Protocol):
    """What renewal needs of a kept tunnel (watch.Kept)."""

    @property
    def config(self) -> Config: ...
    @property
    def key(self) -> str: ...
    @property
    def client_path(self) -> Path: ...
    @property
    def lock(self) -> KeeperLock: ...
    @property
    def tunnel(self) -> Tunnel: ...
    @property
    def previous(self) -> ClientPayload | None: ...


class Renewal:
    """The renewal of one kept tunnel's job, one `step` per watch interval."""

    def __init__(self, kept: Kept, renew_before: float) -> None:
        self.kept = kept
        self.renew_before = renew_before
        self.due_at: float | None = None  # time.monotonic() when the successor is to be submitted
        self.checked_at: float | None = None
        self.successor: ServerState | None = None  # the submitted successor's queued record
        self.predecessor: Job | None = None  # the job it succeeds
        self.reason: str | None = None  # why the successor is queued, as its scheduler said last
        self.starting: stock.StockStart | None = None  # a stock server successor's start
        self.waiting = False  # the old job ended first: the key's record is the successor's
        self.retiring: tuple[Job, float] | None = None  # the old job after the hand-over, and when to cancel it
        self.off = False  # renewal given up (a successor failed, or the walltime is too short)

    @classmethod
    def of(cls, kept: Kept) -> Renewal | None:
        batch = kept.config.scheduler
        return None if batch is None or batch.renew_before is None else cls(kept, batch.renew_before)

    def step(self, host: Host, found: ServerState | None, state: ServerState
             ) -> tuple[ServerState | None, ServerState]:
        """After the watch's check of `state` found `found` (None: its service is gone): what the watch
        goes on with, as (found, state). A hand-over returns the successor's record as both."""
        self._retire(host)
        service = Service(host, self.kept.config, self.kept.key)
        if self.successor is None:
            if found is not None and not self.off and self._due(host, found):
                self._submit(service, found)
            return found, state
        ready = self._successor_ready(service)
        if ready is not None:
            self._switch(service, ready)
            return ready, ready
        if self.successor is None:  # it ended before it served
            return found, state
        if found is None:
            return self._wait(service)
        return found, state

    def abandon(self, host: Host) -> None:
        """The tunnel ends: a successor not handed over yet is cancelled and its files removed."""
        successor, self.successor = self.successor, None
        if successor is None or self.waiting:
            return  # a successor we waited for is the key's service now: `stop` ends it
        job = job_of(successor)
        try:
            if job is not None:
                job.cancel(host)
            self._remove_files(Service(host, self.kept.config, self.kept.key).next_run())
        except LauncherError as exc:
            log.info("%s: could not cancel the successor job: %s", self.kept.key, exc)

    def _due(self, host: Host, state: ServerState) -> bool:
        """The current job runs and its walltime ends within `renew_before` (looked up every RECHECK)."""
        job = job_of(state)
        now = time.monotonic()
        if job is None or state.status != "running":
            return False
        if self.checked_at is not None and now - self.checked_at < RECHECK and (self.due_at is None or
                                                                            now < self.due_at):
            return False  # asked lately, and not due yet (or no limit then)
        from ..schedulers import RUNNING

        info = job.query(host)
        self.checked_at = now
        if info.state != RUNNING or info.seconds_left is None:
            self.due_at = None
            return False
        if info.walltime is not None and self.renew_before >= info.walltime:
            log.warning("%s: scheduler.renew_before (%g s) is not less than job %s's walltime (%g s); not "
                        "renewing it", self.kept.key, self.renew_before, job.id, info.walltime)
            self.off = True
            return False
        self.due_at = now + info.seconds_left - self.renew_before
        return now >= self.due_at

    def _submit(self, service: Service, current: ServerState) -> None:
        self._remove_files(service.next_run())  # a successor's leftovers (a holder that was killed)
        log_end = service.host.read_from(current.log or service.log_file, LOG_END)  # the log is shared
        try:
            self.successor = Launcher(self.kept.config, self.kept.key, self.kept.client_path).start_successor(
                service, current)
        except LauncherError as exc:
            log.warning("%s: could not submit a successor job: %s", self.kept.key, exc)
            self.off = True
            return
        self.predecessor = job_of(current)
        self.starting = stock.StockStart(service.next_run(), self.successor)
        self.starting.log.offset = log_end[1] if log_end is not None else 0  # the successor's URL, not the old one's
        log.info("%s: job %s ends within %g s; submitted its successor, job %s", self.kept.key,
                 current.data.get("job_id"), self.renew_before, self.successor.data.get("job_id"))

    def _successor_ready(self, service: Service) -> ServerState | None:
        """The successor's running record once it answers the handshake; None while it is not ready (and
        `successor` None once it ended)."""
        from ..schedulers import ENDED, QUEUED

        assert self.successor is not None
        job = job_of(self.successor)
        assert job is not None
        current = service.next_run().read_state()
        if current is None or job_of(current) != job:
            current = self.successor
        info = job.query(service.host)
        if info.state == ENDED:
            log.warning("%s: successor job %s ended (%s) before it served; not renewing again", self.kept.key,
                        job.id, info.raw_state)
            self._remove_files(service.next_run())
            self.successor, self.off = None, True
            return None
        if info.state == QUEUED:
            self.reason = info.reason
            return None
        if current.status != "running" and self.starting is not None:
            current = self.starting.poll(current) or current
        port = handshake.port_of(current.data, self.kept.config.handshake)
        if current.status != "running" or port is None:
            return None
        interface = service.server_interface(current)
        problem = handshake.check(interface, port, self.kept.config.handshake,
                                  lambda timeout: service.host.tcp_channel(interface, port, timeout))
        return current if problem is None else None

    def _switch(self, service: Service, new: ServerState) -> None:
        """Forward the same local ports to `new`, make its record the key's, publish, retire the job it
        succeeds (unless that ended already)."""
        kept, successor = self.kept, service.next_run()
        previous = kept.lock.published or kept.previous
        payload = kept.tunnel.redirect(successor, new, previous) if previous is not None else None
        if payload is None:  # other ports by name: new listeners (on the same local ports where free)
            payload = kept.tunnel.reforward(successor, new, previous,
                                            Path(str((previous or {}).get("keeper_log", ""))))
        if isinstance(new.data.get(stock.URL), str):
            payload["url"] = stock.client_url(payload, new, new.data[stock.URL])
        service.host.rename(successor.status_file, service.status_file)
        service.host.rename(successor.job_file, service.job_file)
        statefiles.write_atomic(kept.client_path, statefiles.encode(payload))
        kept.lock.publish(payload)  # type: ignore[arg-type]
        log.info("%s: handed over to job %s on %s port %s", kept.key, new.data.get("job_id"),
                 new.data.get("node"), new.port)
        if self.predecessor is not None and not self.waiting:
            self.predecessor.cancel(service.host, "TERM")
            self.retiring = (self.predecessor, time.monotonic() + STOP_TIMEOUT)
        self.successor, self.predecessor, self.starting, self.waiting, self.due_at = None, None, None, False, None

    def _wait(self, service: Service) -> tuple[ServerState, ServerState]:
        """The old job ended before its successor served: a copy of the successor's queued record becomes
        the key's (its run goes on writing its own, until the hand-over renames it over the key's), the
        client file naming the dead job goes; the local ports stay."""
        assert self.successor is not None
        if not self.waiting:
            self.waiting = True
            service.host.write_atomic(service.status_file, statefiles.encode(dict(self.successor.data)))
            payload: ClientPayload | None = statefiles.read_payload(self.kept.client_path)
            if payload is not None and payload.get("keeper_pid") == os.getpid():
                statefiles.remove(self.kept.client_path)
            log.info("%s: the job ended; waiting for its queued successor, job %s (%s)", self.kept.key,
                     self.successor.data.get("job_id"), self.reason or "waiting")
        current = service.read_state()
        return (current or self.successor), (current or self.successor)

    def _retire(self, host: Host) -> None:
        """The old job after the hand-over: cancelled outright once it outlived its SIGTERM by STOP_TIMEOUT."""
        if self.retiring is None:
            return
        from ..schedulers import ENDED

        job, deadline = self.retiring
        if job.query(host).state == ENDED:
            self.retiring = None
        elif time.monotonic() > deadline:
            job.cancel(host)
            self.retiring = None

    @staticmethod
    def _remove_files(successor: Service) -> None:
        for path in (successor.status_file, successor.job_file, successor.lock_file):
            successor.host.remove(path)
