"""The tunnel keeper process: `python -m remote_http_launcher.keeper` (started by keeper/start.py).

It runs the whole launcher once (connect, find or launch the service, open the
tunnel on its own connection, write the client file, final handshake through
the tunnel). It never reads a terminal: its phases and login questions go to
the front process as JSON lines on the pipe it got as stdout, the answers
come back on its stdin (the protocol is in keeper/start.py), and its result is
the last line. Then it detaches its stdio to `<client dir>/<key>.keeper.log`
and keeps the tunnel until the service exits or the link is lost for good.
So there is one SSH login per tunnel, and the keeper never asks again: its
reconnects use keys and the agent only.

Before connecting it takes the per-key keeper lock. When another keeper holds
it: a working one is reused (its payload is reported, nothing is connected), a
broken one is stopped, one still starting is waited for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from .. import handshake, statefiles
from ..clientfile import keeper_log_path
from ..config import Config, evaluate_key, load_config
from ..errors import LauncherError, TunnelError
from ..launcher import Launcher
from ..progress import Progress
from ..prompts import Prompt
from .lock import KeeperLock, reconnecting_until, served_payload, silence_bound
from .stop import stop_holder

if TYPE_CHECKING:
    from ..service import Service
    from ..statefiles import ClientPayload, ServerState
    from .tunnel import Tunnel

WAIT_POLL = 0.1
STARTING_GRACE = 60.0  # beyond the startup timeout, for a login (prompts) in the other run
RECONNECT_POLL = 0.5  # how often a run tries the tunnel of a keeper that is restoring its link
RECONNECT_GRACE = 30.0  # beyond a reconnecting keeper's own limit: its last attempt may be under way
SILENCE_GRACE = 5.0  # beyond the time a keeper takes to notice a silent link, for it to say so in its lock
log = logging.getLogger("remote_http_launcher.keeper")


class Report:
    """Our lines to the front process (keeper/start.py has the protocol); a front that went away is not an error.

    Phases and questions come first, the result last; the front answers questions on our stdin.
    """

    def __init__(self) -> None:
        self.fd: int | None = os.dup(1)
        os.dup2(2, 1)  # stray prints must not corrupt our lines
        self._lock = threading.Lock()  # phases come from the launcher's threads too

    def message(self, message: dict[str, Any]) -> bool:
        """Send one line; False when there is no front to send it to."""
        with self._lock:
            if self.fd is None:
                return False
            try:
                os.write(self.fd, (json.dumps(message) + "\n").encode())
            except OSError:
                return False
            return True

    def send(self, result: dict[str, Any]) -> None:
        """The last line: the result or the error."""
        self.message(result)
        self.close()

    def close(self) -> None:
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def ask(self, text: str, secret: bool) -> str:
        """A login question for the front, which asks it where the user called from and sends the answer."""
        if not self.message({"prompt": text, "secret": secret}):
            raise EOFError("the run that started the tunnel keeper is gone")
        line = sys.stdin.buffer.readline()
        reply = json.loads(line) if line.strip() else {}
        if not isinstance(reply, dict) or not isinstance(reply.get("answer"), str):
            raise EOFError(str(reply.get("cancel", "no answer")) if isinstance(reply, dict) else "no answer")
        return str(reply["answer"])


class RelayedProgress(Progress):
    """Phases go to our log and to the front process, which shows them (we never touch a terminal)."""

    def __init__(self, report: Report) -> None:
        super().__init__(quiet=True, live=False)
        self.report = report

    def phase(self, text: str) -> None:
        super().phase(text)
        self.report.message({"phase": text})


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m remote_http_launcher.keeper",
                                     description="Internal: started by remote-http-launcher for 'tunnel: true'.")
    parser.add_argument("--key", required=True, help="the service's key (also makes the process recognisable)")
    parser.add_argument("--config-file", required=True, type=Path, help="JSON config, deleted once read")
    parser.add_argument("--connection-dir", required=True)
    parser.add_argument("--ask", action="store_true", help="send login questions to the front process")
    parser.add_argument("--accept-new-host-key", action="store_true",
                        help="record an unknown host key at the first login (never a changed one)")
    return parser.parse_args(argv)


def read_config(path: Path) -> Config:
    """The config the command validated; its warnings were shown there already (our stderr is still the
    user's terminal)."""
    try:
        data = json.loads(path.read_bytes())
    finally:
        path.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_config(data)


def main(argv: list[str] | None = None) -> int:
    report = Report()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    key: str | None = None
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        progress = RelayedProgress(report)
        config = read_config(args.config_file)
        key = evaluate_key(config)
        client_path = statefiles.client_file(key, args.connection_dir, local_service=not config.remote)
        launcher = Launcher(config, key, client_path, progress)
        lock = KeeperLock(launcher.client_path, key)
        reused, previous = claim(lock, launcher)
        if reused is not None:
            statefiles.write_atomic(launcher.client_path, statefiles.encode(reused))
            report.send({"payload": reused, "reused": True})
            return 0
        return Keeper(launcher, lock, report, report.ask if args.ask else None, previous,
                      accept_new_host_key=args.accept_new_host_key).run()
    except LauncherError as exc:
        if exc.key is None and key is not None:
            exc.key = key  # e.g. a login error, which knows only its host
        report.send(exc.to_dict())
        return exc.exit_code
    except Exception as exc:  # a bug: still one line for the front, the traceback in our log or stderr
        log.exception("keeper failed")
        error = LauncherError(f"tunnel keeper: internal error ({exc.__class__.__name__}: {exc})",
                              step="tunnel keeper")
        report.send(error.to_dict())
        return error.exit_code


def _exit_on_signal(signum: int, frame: Any) -> NoReturn:
    signal.signal(signum, signal.SIG_IGN)  # one cleanup only
    raise SystemExit(128 + signum)


class Claim(NamedTuple):
    """What taking the keeper lock found: a live keeper's payload to reuse, or the payload of the keeper
    we replace (its local ports are taken again when free, for clients that hold them)."""

    reused: ClientPayload | None
    previous: ClientPayload | None


def claim(lock: KeeperLock, launcher: Launcher) -> Claim:
    """Take the keeper lock, or find a live keeper that answers (or will: one restoring its link is waited for)."""
    deadline = time.monotonic() + launcher.config.startup_timeout + STARTING_GRACE
    waiting = ""
    previous: ClientPayload | None = None
    suspect_since: float | None = None  # when a keeper's tunnel first gave no answer
    while not lock.acquire_for_key():
        raw, owner = lock.read()
        payload = served_payload(owner) if owner is not None else None
        previous = payload or previous
        if lock.break_if_gone(raw):
            continue
        if owner is not None and payload is not None:
            tried = time.monotonic()
            if handshake.payload_answers(payload, launcher.config.handshake):
                return Claim(payload, None)
            silent = time.monotonic() - tried >= handshake.HANDSHAKE_TIMEOUT  # no answer at all, not a refusal
            owner = lock.read()[1]  # again: it may have noticed the lost link while we tried it
            live = owner is not None and owner.same_process()
            until = reconnecting_until(owner) if owner is not None and live else None
            if owner is not None and until is not None and time.time() < until + RECONNECT_GRACE:
                waiting = _phase(launcher, waiting, f"tunnel keeper {owner.pid} is restoring its link; waiting")
                time.sleep(RECONNECT_POLL)
                continue
            # A silent tunnel may be a silent link that the keeper has not noticed yet: give it that long.
            bound = silence_bound(owner) if owner is not None and live and silent else None
            suspect_since = suspect_since or tried
            if owner is not None and bound is not None and time.monotonic() < suspect_since + bound + SILENCE_GRACE:
                waiting = _phase(launcher, waiting, f"tunnel keeper {owner.pid} does not answer; waiting for it "
                                 "to check its link")
                continue
            if owner is not None:
                launcher.progress.phase(f"stopping tunnel keeper {owner.pid}: its tunnel does not answer")
                stop_holder(owner, lock.key)
            continue
        if time.monotonic() > deadline:
            pid = f" (pid {owner.pid})" if owner else ""
            raise TunnelError(f"{launcher.key}: another run{pid} has been starting the tunnel keeper for too "
                              f"long; remove {lock.path} if no remote-http-launcher is running",
                              key=launcher.key, step="tunnel keeper")
        waiting = _phase(launcher, waiting, "another run is starting the tunnel; waiting")
        time.sleep(WAIT_POLL)
    return Claim(None, previous)


def _phase(launcher: Launcher, shown: str, text: str) -> str:
    """Show `text` once (a new phase), then tick; the phase now shown."""
    if text != shown:
        launcher.progress.phase(text)
    launcher.progress.tick()
    return text


class Keeper:
    """Holds the lock: serves the tunnel until the watchdog says there is nothing left to keep."""

    def __init__(self, launcher: Launcher, lock: KeeperLock, report: Report, ask: Prompt | None,
                 previous: ClientPayload | None = None, *, accept_new_host_key: bool = False) -> None:
        self.launcher = launcher
        self.previous = previous  # the payload of the keeper we replace: its local ports are taken again
        self.lock = lock
        self.report = report
        self.ask = ask
        self.accept_new_host_key = accept_new_host_key  # the first login only; reconnects meet a known key
        self.log_path = keeper_log_path(launcher.client_path)

    def run(self) -> int:
        from ..hosts.ssh import SSHHost

        tunnel: Tunnel | None = None
        written: bytes | None = None
        host: SSHHost | None = None
        try:
            log_fd = self._open_log()
            self.launcher.progress.phase(f"connecting to {self.launcher.config.ssh_target}")
            host = SSHHost.connect(self.launcher.config.ssh_target, interactive=self.ask is not None,
                                   prompt=self.ask, accept_new_host_key=self.accept_new_host_key)
            # Only now: sshtunnel imports paramiko, and connecting has already loaded it without invoke.
            from .tunnel import Tunnel
            from .watchdog import Watchdog

            tunnel = Tunnel(host.transport)
            opening = threading.Lock()

            def open_tunnel(service: Service, state: ServerState) -> dict[str, Any]:
                """Called while the launcher checks `state` (see Launcher._verify): again for a relaunch."""
                with opening:
                    self.launcher.progress.phase("opening the tunnel")
                    return tunnel.reforward(service, state, self.previous, self.log_path)

            payload, state = self.launcher.serve(host, open_tunnel)
            written = statefiles.encode(payload)
            self.lock.silence_bound = host.connection.endpoint.silence_bound
            self.lock.publish(payload)
            self.launcher.progress.close()
            self.report.send({"payload": payload, "reused": False})
            self._detach(log_fd)
            watchdog = Watchdog(host, state, tunnel, self.launcher.config, self.lock.reconnecting)
            try:
                reason = watchdog.run()
            finally:
                host = watchdog.host  # the one to close, after reconnects
            log.info("stopping: %s", reason)
            return 0
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if tunnel is not None:
                tunnel.close()
            if written is not None and statefiles.read_bytes(self.launcher.client_path) == written:
                statefiles.remove(self.launcher.client_path)
            self.lock.release()
            if host is not None:
                host.close()
            log.info("keeper %d exits", os.getpid())

    def _open_log(self) -> int:
        """Our log (truncated: we hold the lock, so no other keeper writes it); phases go there too."""
        fd = open_log(self.log_path)
        log.info("keeper %d for %s", os.getpid(), self.launcher.key)
        return fd

    def _detach(self, log_fd: int) -> None:
        self.launcher.progress.quiet = True
        detach(log_fd)


def open_log(path: Path) -> int:
    """Truncate and open our log (0600); the package's log records go there. Its fd, for `detach`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, statefiles.FILE_MODE)
    handler = logging.StreamHandler(os.fdopen(os.dup(fd), "a", buffering=1, encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("remote_http_launcher")
    root.setLevel(logging.INFO)
    root.propagate = False
    root.addHandler(handler)
    return fd


def detach(log_fd: int) -> None:
    """Leave the user's terminal: stdin from /dev/null, stdout and stderr to our log (the keeper, the broker)."""
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)  # no console to leave: keeper/start.py starts us without one on Windows
