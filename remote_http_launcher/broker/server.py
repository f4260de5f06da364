"""The broker process: `python -m remote_http_launcher.broker` (started by broker/client.py).

It takes the destination's broker lock, logs in once (its login questions go
to the client that started it, as JSON lines: the keeper's relay, see
keeper/start.py), then serves Host calls from any number of local clients
over its socket (broker/protocol.py) until it has been unused for
`--persist` seconds, or its SSH link is gone. On the way out it removes its
socket, authkey and lock (the log stays).

The first line protocol ends with one of:
  {"ready": ADDRESS}   logged in and listening
  {"busy": true}       another live broker holds the lock: the client waits for that one
  an error             LauncherError.to_dict(), e.g. a refused login
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import statefiles
from ..errors import BrokerUnavailable, LauncherError
from ..processes import OUT_OF_FDS, connection_cap, own_uid, raise_fd_limit
from ..ssh import dialahead
from ..tunnels.daemon import Report, detach, exit_on_signal, open_log
from .protocol import KEY_BYTES, Wire, peer, prove_server
from .registry import BrokerFiles, BrokerLock, is_broker
from .session import StatusMemory, serve_session
from .tunnels import Tunnels

if TYPE_CHECKING:
    from ..hosts.ssh import SSHHost
    from ..prompts import Prompt
    from ..tunnels.watch import Link
    from .protocol import Endpoint

IDLE_CHECK = 1.0
LISTEN_BACKLOG = 64  # commands that connect at once wait in the queue, not refused
KEEPALIVE = 30  # seconds: keeps an idle link (and NAT mappings) alive while the broker waits
KEEPER_LOCKS = "keeper_locks"  # <id>.tunnels: {KEEPER_LOCKS: [path, ...]}
MAX_CLIENTS = 512  # connections from commands at once (fewer under a low open-file limit); more are closed at once
ACCEPT_BACKOFF = (0.05, 1.0)  # seconds: first and longest wait before accepting again when out of descriptors
log = logging.getLogger("remote_http_launcher.broker")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m remote_http_launcher.broker",
                                     description="Internal: started by remote-http-launcher to keep one login.")
    parser.add_argument("--target", required=True, help="the SSH destination ([user@]host or an alias)")
    parser.add_argument("--persist", required=True, type=float, help="seconds to outlive the last use")
    parser.add_argument("--ask", action="store_true", help="send login questions to the front process")
    parser.add_argument("--accept-new-host-key", action="store_true", help="record an unknown host key")
    parser.add_argument(dialahead.DIAL_FLAG, nargs=2, metavar=("HOST", "PORT"), help=dialahead.DIAL_HELP)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    report = Report()
    signal.signal(signal.SIGTERM, exit_on_signal)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Until open_log, a failure must not reach logging's last resort: a traceback on the user's terminal.
    logging.getLogger("remote_http_launcher").addHandler(logging.NullHandler())
    raise_fd_limit()
    lock: BrokerLock | None = None
    try:
        files = BrokerFiles.for_target(args.target)
        statefiles.ensure_private_dir(files.directory)
        lock = BrokerLock(files)
        if not claim(lock):
            report.send({"busy": True})
            return 0
        broker = Broker(args.target, args.persist, files, lock)
        broker.inherited = inherited(files)
        return broker.run(report, report.ask if args.ask else None, args.accept_new_host_key)
    except LauncherError as exc:
        if exc.step == "state directory":  # ours, not the login's: the client logs in itself
            exc = BrokerUnavailable(f"connection broker: {exc}")
        if isinstance(exc, BrokerUnavailable):
            _say(exc)
        report.send(exc.to_dict())
        return exc.exit_code
    except Exception as exc:  # a bug: one line for the client (which then logs in itself), the traceback in our log
        log.exception("broker failed")
        failure = BrokerUnavailable(f"connection broker: internal error ({exc.__class__.__name__}: {exc})")
        _say(failure)
        report.send(failure.to_dict())
        return 1
    finally:
        if lock is not None:
            lock.release()


def _say(failure: BrokerUnavailable) -> None:
    """One line on the user's terminal (our log once detached): the command goes on with a login of its own."""
    print(f"warning: {failure}; logging in directly", file=sys.stderr, flush=True)


def inherited(files: BrokerFiles) -> list[str]:
    """The keeper locks of the tunnels a broker before us kept when it died (we hold the broker lock)."""
    statefiles.check_trusted(files.tunnels, "broker tunnel list")
    paths = (statefiles.decode(statefiles.read_bytes(files.tunnels)) or {}).get(KEEPER_LOCKS)
    return [path for path in paths if isinstance(path, str)] if isinstance(paths, list) else []


def claim(lock: BrokerLock) -> bool:
    """Take the lock (True), or find that a live broker holds it (False)."""
    while not lock.acquire():
        raw, owner = lock.read()
        if owner is not None and is_broker(owner):
            return False
        if not lock.break_if_gone(raw):
            return False  # a lock still being written: its writer is starting a broker
    return True


class Broker:
    """Holds the login; counts use, so it knows when it has been idle long enough."""

    def __init__(self, target: str, persist: float, files: BrokerFiles, lock: BrokerLock) -> None:
        self.target = target
        self.persist = persist
        self.files = files
        self.lock = lock
        self.since = time.time()
        self.sessions = 0
        self.clients = 0  # open connections, proven or not
        self.max_clients = connection_cap(MAX_CLIENTS)
        self.last_use = time.monotonic()
        self._count = threading.Lock()
        self.link: Link
        self.authkey = b""
        self.broker_id = files.lock  # where a keeper lock's `broker` field finds us
        self.log_path = Path(files.log)
        self.tunnels = Tunnels(self)
        self.statuses = StatusMemory()
        self.inherited: list[str] = []  # keeper locks of a dead broker's tunnels, restored once we are up
        self._record = threading.Lock()

    @property
    def host(self) -> SSHHost:
        """The host our link is logged in to now (it follows reconnects)."""
        return self.link.host

    @property
    def sftp_lock(self) -> threading.Lock:
        """One SFTP session: its request flights must not interleave (the link's checks take it too)."""
        return self.link.lock

    def run(self, report: Report, ask: Any, accept_new_host_key: bool = False) -> int:
        from ..hosts.ssh import SSHHost
        from ..tunnels.watch import Link

        log_fd = open_log(self.log_path, keep_previous=True)
        listener: Listener | None = None
        link: Link | None = None
        try:
            host = SSHHost.connect(self.target, interactive=ask is not None, prompt=ask,
                                   accept_new_host_key=accept_new_host_key)
            try:
                link = self.link = Link(self.target, host, idle_keepalive=KEEPALIVE, shells=True)
            finally:
                if link is None:
                    host.close()
            authkey = os.urandom(KEY_BYTES)
            statefiles.write_atomic(self.files.key, authkey)
            address = self.files.address(self.lock.token)
            if sys.platform != "win32":
                statefiles.remove(address)  # a dead broker's (we hold the lock, so it is no one's)
            listener = Listener(address, backlog=LISTEN_BACKLOG)  # the key is proven on each session's thread
            self.authkey = authkey
            self.lock.rewrite(target=self.target, address=address, since=self.since, persist=self.persist)
            report.send({"ready": address})
            detach(log_fd)
            log.info("broker %d for %s at %s", os.getpid(), self.target, address)
            threading.Thread(target=self._accept, args=(listener,), daemon=True, name="rhl-broker-accept").start()
            if self.inherited:
                log.info("restoring %d tunnel(s) of the previous broker", len(self.inherited))
                threading.Thread(target=self.tunnels.restore, args=(self.inherited,), daemon=True,
                                 name="rhl-broker-restore").start()
            log.info("stopping: %s", self._wait_until_done())
            return 0
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if link is not None:
                self.tunnels.drop_all("the broker exits")
            if listener is not None:
                listener.close()  # removes the socket file
            statefiles.remove(self.files.key)
            statefiles.remove(self.files.tunnels)
            if link is not None:
                link.close()

    def _accept(self, listener: Listener) -> None:
        """Accept until the listener is closed. Out of descriptors, wait for some to free (never give up:
        the broker would be unusable for good); over `max_clients`, close the new connection at once (its
        command logs in itself rather than wait)."""
        backoff = 0.0
        while True:
            try:
                conn = listener.accept()
            except OSError as exc:
                if exc.errno not in OUT_OF_FDS:
                    return  # the listener was closed: we are exiting
                if not backoff:
                    log.warning("out of file descriptors (%s): accepting again when some are free", exc)
                backoff = min(max(backoff * 2, ACCEPT_BACKOFF[0]), ACCEPT_BACKOFF[1])
                time.sleep(backoff)
                continue
            if backoff:
                log.warning("accepting again")
                backoff = 0.0
            with self._count:
                full = self.clients >= self.max_clients
                self.clients += not full
            if full:
                log.info("refused a client: %d connections are open", self.max_clients)
                conn.close()
                continue
            try:
                threading.Thread(target=self._session, args=(conn,), daemon=True, name="rhl-broker-session").start()
            except RuntimeError as exc:  # no thread to be had: as over the limit
                log.info("refused a client: %s", exc)
                conn.close()
                with self._count:
                    self.clients -= 1

    def _session(self, conn: Endpoint) -> None:
        """One client: a process of our user that proves it knows the authkey (and we that we do), then its
        requests are served.

        The proof runs here, not in the accepting thread, so a client that stalls in it delays no other;
        it counts as a use only once proven (a stalled one cannot keep us from idling out)."""
        wire = Wire(conn)
        try:
            found, mine = peer(conn), own_uid()  # none on Windows: the pipe's name is the secret there
            if found is not None and mine is not None and found.uid != mine:
                raise BrokerUnavailable(f"connection broker: a process of user {found.uid}")
            prove_server(wire, self.authkey)
        except (OSError, EOFError, BrokerUnavailable) as exc:
            log.info("refused a client: %s", exc)
            wire.close()
            with self._count:
                self.clients -= 1
            return
        with self._count:
            self.sessions += 1
        try:
            serve_session(wire, self)
        finally:
            wire.close()
            with self._count:
                self.sessions -= 1
                self.clients -= 1

    def record_tunnels(self, locks: list[str]) -> None:
        with self._record:
            if locks:
                statefiles.write_atomic(self.files.tunnels, statefiles.encode({KEEPER_LOCKS: locks}))
            else:
                statefiles.remove(self.files.tunnels)

    def used(self) -> None:
        self.last_use = time.monotonic()

    def info(self) -> dict[str, Any]:
        return {"target": self.target, "pid": os.getpid(), "since": self.since, "sessions": self.sessions - 1,
                "idle": time.monotonic() - self.last_use, "persist": self.persist,
                "tunnels": sorted(self.tunnels.by_key), "link": self.link.state()}

    def waits_for_login(self) -> bool:
        return self.link.waiting_for_login

    def login(self, prompt: Prompt) -> None:
        """A client's user answers our new login: the link, with every tunnel on its local ports, is restored
        with it (a link restored meanwhile keeps its own)."""
        from ..hosts.ssh import SSHHost

        if not self.link.waiting_for_login:
            return
        log.info("logging in to %s again, asking a command's user", self.target)
        if not self.link.hand(SSHHost.connect(self.target, prompt=prompt)):
            log.info("the link to %s was restored without that login", self.target)

    def _wait_until_done(self) -> str:
        while True:
            time.sleep(IDLE_CHECK)
            host = self.link.host
            if not host.transport.is_active():
                if not self.tunnels.by_key:
                    return f"the link to {self.target} is gone"  # the next command starts a broker afresh
                if not self.link.restore(host):
                    return f"the link to {self.target} is gone and was not restored"
            with self._count:
                idle = time.monotonic() - self.last_use
                if self.sessions == 0 and not self.tunnels.by_key and idle >= self.persist:
                    return f"unused for {self.persist:g} s"
