"""The keeper's watchdog: is the service still there, and is the SSH link still up?

Every `watchdog_interval` seconds it checks the service's PID and start time (a
batch job: the job, with its scheduler) on the server over the keeper's own connection; SSH keep-alives at the same
interval keep idle links (and NAT mappings) alive. A check that hangs (a link
that died silently) is cut off by closing the transport. A lost link is
re-established without prompts, with backoff, for RECONNECT_INTERVALS
intervals (60 s at the default 5 s); the local ports stay bound meanwhile, and
`on_reconnect` is told until when (so other runs wait for us instead of
replacing us, see process.claim).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..config import Config
from ..errors import AuthenticationError, HostError, HostKeyError
from ..hosts.ssh import SSHHost
from ..service import ended, is_ours
from ..statefiles import ServerState
from .tunnel import Tunnel

RECONNECT_INTERVALS = 12
MIN_CHECK_TIMEOUT = 10.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
LINK_POLL = 0.2  # seconds between looks at whether the connection is still open (a local check)
log = logging.getLogger("remote_http_launcher.keeper")


class Watchdog:
    """Runs until the service is gone or the link cannot be restored; `host` follows reconnects."""

    def __init__(self, host: SSHHost, state: ServerState, tunnel: Tunnel, config: Config,
                 on_reconnect: Callable[[float | None], None] = lambda until: None) -> None:
        self.host = host
        self.state = state
        self.tunnel = tunnel
        self.config = config
        self.on_reconnect = on_reconnect  # called with the time.time() we reconnect until, then None once up
        self.interval = config.watchdog_interval
        self._keepalive()

    def run(self) -> str:
        """Block until there is nothing left to keep; return why, for the keeper's log."""
        while True:
            self._pause()
            try:
                alive = self._service_alive()
            except HostError as exc:
                log.info("link to %s lost (%s); reconnecting", self.config.ssh_target, exc)
                if not self._reconnect():
                    return f"link to {self.config.ssh_target} lost and not restored within {self._budget():.0f} s"
                continue
            if not alive:
                return f"{ended(self.state)} ({self.host.name})"

    def _pause(self) -> None:
        """One interval, cut short when the connection closes (its alive check closes it once the server
        stops answering): reconnecting at once also tells other runs at once to wait for us."""
        deadline = time.monotonic() + self.interval
        while (left := deadline - time.monotonic()) > 0 and self.host.transport.is_active():
            time.sleep(min(LINK_POLL, left))

    def _service_alive(self) -> bool:
        transport = self.host.transport
        timer = threading.Timer(max(MIN_CHECK_TIMEOUT, 2 * self.interval), transport.close)
        timer.daemon = True
        timer.start()
        try:
            alive = is_ours(self.host, self.state)
        finally:
            timer.cancel()
        if not transport.is_active():
            # The answer may be an artefact of the dying link.
            raise HostError("connection lost", host=self.host.name, step="watchdog")
        return alive

    def _reconnect(self) -> bool:
        self.on_reconnect(time.time() + self._budget())  # before local connections start failing at once
        self.tunnel.transport = None  # local connections fail at once instead of hanging meanwhile
        self.host.close()
        host = reconnect(self.config.ssh_target, self._budget())
        if host is None:
            return False
        self.host = host
        self._keepalive()
        self.tunnel.transport = self.host.transport
        self.on_reconnect(None)
        return True

    def _budget(self) -> float:
        return RECONNECT_INTERVALS * self.interval

    def _keepalive(self) -> None:
        self.host.transport.set_keepalive(max(1, round(self.interval)))


def reconnect(target: str, budget: float) -> SSHHost | None:
    """Log in to `target` again without prompts, with backoff, for up to `budget` seconds; None when it
    was refused or did not succeed in time (the keeper's watchdog and the broker, for their tunnels)."""
    deadline = time.monotonic() + budget
    delay = FIRST_BACKOFF
    while True:
        try:
            host = SSHHost.connect(target, interactive=False)
        except (AuthenticationError, HostKeyError) as exc:
            log.info("reconnect refused, giving up: %s", exc)  # retrying will not change the answer
            return None
        except HostError as exc:
            log.info("reconnect failed: %s", exc)
        else:
            log.info("reconnected to %s", target)
            return host
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(delay, remaining))
        delay = min(2 * delay, MAX_BACKOFF)
