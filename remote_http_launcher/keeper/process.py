"""The tunnel keeper process: `python -m remote_http_launcher.keeper` (started by keeper/start.py).

It runs the whole launcher once (connect, find or launch the service, open the
tunnel on its own connection, write the client file, final handshake through
the tunnel). It never reads a terminal: its phases and login questions go to
the front process through the daemons' relay (tunnels/daemon.py), and its
result is the last line. Then it detaches its stdio to
`<client dir>/<key>.keeper.log` and keeps the tunnel (tunnels/watch.py) until
the service exits (or its `reconnect_timeout` passes with the link lost). So
there is one SSH login per tunnel, and the keeper never asks again: its
reconnects use keys and the agent only, and one that needs an answer waits,
its local ports bound, for the next run that can ask to replace it
(tunnels/claim.py).

Before connecting it claims the key (tunnels/claim.py): a working tunnel is
reused (its payload is reported, nothing is connected), a broken keeper
process is stopped, one still starting is waited for.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import statefiles
from ..clientfile import keeper_log_path
from ..config import evaluate_key
from ..errors import LauncherError
from ..launcher import Launcher
from ..ssh import dialahead
from ..tunnels.claim import claim
from ..tunnels.daemon import RelayedProgress, Report, detach, exit_on_signal, open_log, read_config
from ..tunnels.lock import KeeperLock

if TYPE_CHECKING:
    from ..prompts import Prompt
    from ..service import Service
    from ..statefiles import ClientPayload, ServerState
    from ..tunnels.watch import Link

log = logging.getLogger("remote_http_launcher.keeper")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m remote_http_launcher.keeper",
                                     description="Internal: started by remote-http-launcher for 'tunnel: true'.")
    parser.add_argument("--key", required=True, help="the service's key (also makes the process recognisable)")
    parser.add_argument("--config-file", required=True, type=Path, help="JSON config, deleted once read")
    parser.add_argument("--connection-dir", required=True)
    parser.add_argument("--ask", action="store_true", help="send login questions to the front process")
    parser.add_argument("--accept-new-host-key", action="store_true",
                        help="record an unknown host key at the first login (never a changed one)")
    parser.add_argument(dialahead.DIAL_FLAG, nargs=2, metavar=("HOST", "PORT"), help=dialahead.DIAL_HELP)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    report = Report()
    signal.signal(signal.SIGTERM, exit_on_signal)
    key: str | None = None
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        progress = RelayedProgress(report)
        config = read_config(args.config_file)
        key = evaluate_key(config)
        client_path = Path(statefiles.client_file(key, args.connection_dir, local_service=not config.remote))
        launcher = Launcher(config, key, client_path, progress)
        lock = KeeperLock(client_path, key)
        reused, previous = claim(lock, config, progress, can_login=args.ask)
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


class Keeper:
    """Holds the lock: serves the tunnel until its watch says there is nothing left to keep."""

    def __init__(self, launcher: Launcher, lock: KeeperLock, report: Report, ask: Prompt | None,
                 previous: ClientPayload | None = None, *, accept_new_host_key: bool = False) -> None:
        self.launcher = launcher
        self.previous = previous  # the payload of the keeper we replace: its local ports are taken again
        self.lock = lock
        self.report = report
        self.ask = ask
        self.accept_new_host_key = accept_new_host_key  # the first login only; reconnects meet a known key
        self.log_path = Path(keeper_log_path(launcher.client_path))

    def run(self) -> int:
        from ..hosts.ssh import SSHHost

        link: Link | None = None
        try:
            log_fd = open_log(self.log_path)
            log.info("keeper %d for %s", os.getpid(), self.launcher.key)
            self.launcher.progress.phase(f"connecting to {self.launcher.config.ssh_target}")
            host = SSHHost.connect(self.launcher.config.ssh_target, interactive=self.ask is not None,
                                   prompt=self.ask, accept_new_host_key=self.accept_new_host_key)
            # Only now: sshtunnel imports paramiko, and connecting has already loaded it without invoke.
            from ..tunnels.forward import Tunnel
            from ..tunnels.watch import Kept, Link

            link = Link(self.launcher.config.ssh_target, host)
            kept = Kept(self.launcher.config, self.launcher.key, Path(self.launcher.client_path), self.lock,
                        Tunnel(host.transport), threading.Event(), self.previous)
            opening = threading.Lock()

            def open_tunnel(service: Service, state: ServerState) -> dict[str, Any]:
                """Called while the launcher checks `state` (see Launcher._verify): again for a relaunch."""
                with opening:
                    self.launcher.progress.phase("opening the tunnel")
                    return kept.tunnel.reforward(service, state, self.previous, self.log_path)

            try:
                payload, state = self.launcher.serve(host, open_tunnel)
                link.kept[kept.key] = kept
                self.lock.silence_bound = link.silence_bound()
                self.lock.publish(payload)
                link.keepalive()
                self.launcher.progress.close()
                self.report.send({"payload": payload, "reused": False})
                self.launcher.progress.quiet = True
                detach(log_fd)
                why = link.watch(kept, state)
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                link.end(kept, "the keeper exits")
            log.info("stopping: %s", why)
            return 0
        finally:
            self.lock.release()
            if link is not None:
                link.close()
            log.info("keeper %d exits", os.getpid())
