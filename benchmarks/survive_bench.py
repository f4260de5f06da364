"""Sessions that survive: how soon a kept tunnel answers again after a long silent link and after a suspend.

On the SSH setup of ssh_bench.py (loopback, the real sshd behind a LinkProxy),
a tunnel kept by the connection broker with the config's defaults
(`watchdog_interval` 5, no `reconnect_timeout`, no ServerAliveInterval):

- silent link: the proxy stops carrying packets without closing anything for
  SILENCE seconds (a dropped VPN, a train tunnel); from the moment it carries
  them again, the seconds until a client polling the same local port every
  POLL seconds gets an answer;
- suspend: the broker is stopped (SIGSTOP) for SUSPEND seconds and its link is
  cut meanwhile (a laptop's sleep: the NAT mapping is gone on resume); from
  SIGCONT, the seconds until the same local port answers.

Both rows check that nothing was relaunched (the service's PID) and the
local port is the one the client file named before; the target is the
issue's 30 s.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.linkproxy import LinkProxy, get
from tests.ssh_client import remote_state

from .common import Row, at_most, launcher_argv, log, timed_run
from .ssh_bench import PERSIST, SSHSetup, Unavailable

SILENCE = 150.0
SUSPEND = 120.0
POLL = 0.5
TARGET = 30.0  # seconds until the same local port answers again
GIVE_UP = 120.0  # seconds of polling before a row reports a failure


def run_survive() -> list[Row]:
    log("setting up sshd for the survival rows (silent link, suspend)")
    try:
        setup = SSHSetup.create([0.0])
    except Unavailable as exc:
        return [Row("tunnel recovery", f"skipped: {exc}", "")]
    link = setup.links[0]
    rows: list[Row] = []
    for name, (metric, interrupt) in {
        "silent": (f"tunnel answers again after a {SILENCE:g} s silent link (same local port, no command run)",
                   lambda holder: _silence(link.ssh_proxy)),
        "suspend": (f"tunnel answers again after a {SUSPEND:g} s suspend of the broker, link cut meanwhile",
                    lambda holder: _suspend(holder, link.ssh_proxy)),
    }.items():
        config = setup.config(link, tunnel=True, persist=PERSIST, suffix=f"-{name}")
        log(f"tunnel recovery: {name}")
        try:
            rows.append(at_most(metric, [_recovery(setup, config, interrupt)], TARGET))
        except RuntimeError as exc:
            rows.append(Row(metric, f"error: {str(exc)[:200]}", "", f"≤ {TARGET:g} s", False))
    return rows


def _recovery(setup: SSHSetup, config: Path, interrupt: Callable[[int], None]) -> float:
    """Start the tunnel, `interrupt` its holder (returns when the link may carry packets again); the seconds
    from then until the same local port answers, with the same service."""
    timed_run(launcher_argv(config), setup.env(), timeout=180)
    payload = json.loads(setup.client_file(config).read_text())
    service = _service_pid(setup, config)
    interrupt(int(payload["keeper_pid"]))
    start = time.monotonic()
    while time.monotonic() - start < GIVE_UP:
        try:
            if get(int(payload["port"])) == b"ok\n":
                break
        except OSError:
            time.sleep(POLL)
    else:
        raise RuntimeError(f"port {payload['port']} did not answer within {GIVE_UP:g} s")
    elapsed = time.monotonic() - start
    if _service_pid(setup, config) != service:
        raise RuntimeError("the service was relaunched")
    return elapsed


def _service_pid(setup: SSHSetup, config: Path) -> object:
    state = remote_state(setup.server, config.stem)
    return None if state is None else state.get("pid")


def _silence(proxy: LinkProxy) -> None:
    proxy.freeze()
    try:
        time.sleep(SILENCE)
    finally:
        proxy.thaw()


def _suspend(holder: int, proxy: LinkProxy) -> None:
    os.kill(holder, signal.SIGSTOP)
    try:
        proxy.cut()
        time.sleep(SUSPEND)
    finally:
        os.kill(holder, signal.SIGCONT)
