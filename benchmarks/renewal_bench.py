"""Walltime continuity on the test suite's SLURM cluster: a 2-minute job with `renew_before: 70`, served on one
local port for 3 minutes while a client polls it every 0.5 s.

The job's tunnel holder submits a successor 70 s before the walltime ends and
moves the same local port to it once it answers; the figure is the longest run
of failed requests (first failure to the next answer) over all hand-overs in
the 3 minutes. Opt-in (`--only renewal`): it takes over 3 minutes.
"""

from __future__ import annotations

import json
import time
import urllib.request

from .common import CLEANUP, Row, at_most, launcher_argv, log, read_config, timed_run, write_config
from .ssh_bench import SSHSetup, Unavailable

WALLTIME = "--time=2"
RENEW_BEFORE = 70
SERVE_FOR = 180.0  # seconds the client polls
POLL = 0.5
GAP_TARGET = 2.0
METRIC = f"walltime hand-over: longest run of failed requests (2-min jobs, renew_before {RENEW_BEFORE}, " \
         f"polled every {POLL:g} s for {SERVE_FOR / 60:g} min)"


def run_renewal(rtt: float) -> list[Row]:
    import pytest

    from tests.machine import machine_lock
    from tests.slurm import start_cluster

    log("setting up sshd and a SLURM cluster behind it (waiting for other test clusters on this machine)")
    try:
        setup = SSHSetup.create([rtt])
        lock = machine_lock()
        CLEANUP.push("machine lock", lock.close)
        cluster = start_cluster(setup.server)
    except (Unavailable, pytest.skip.Exception, pytest.fail.Exception, RuntimeError) as exc:
        return [Row(METRIC, f"skipped: {str(exc).splitlines()[0]}", "")]
    CLEANUP.push("SLURM cluster", cluster.close)
    link = setup.links[0]
    config = setup.config(link, tunnel=True, suffix="-renewal")
    data = read_config(config)
    data.update(network_interface="0.0.0.0", watchdog_interval=1,
                scheduler={"type": "slurm", "options": [WALLTIME], "renew_before": RENEW_BEFORE})
    write_config(config, data)
    cluster.cancel_all()
    setup.clean_remote()
    setup.forget_client(config)
    log(f"walltime renewal, {link.label}: one 2-minute job and its successors, polled for {SERVE_FOR:g} s")
    _, done = timed_run([*launcher_argv(config), "--json"], setup.env(), timeout=180)
    port = json.loads(done.stdout)["port"]
    [(first, _, key)] = cluster.jobs()
    results = _poll(port, SERVE_FOR)
    jobs = cluster.jobs()
    setup.forget_client(config)
    cluster.cancel_all()
    setup.clean_remote()
    gaps, failed = _gaps(results), sum(not ok for _, ok in results)
    running = [job for job, state, name in jobs if name == key and state == "RUNNING"]
    note = (f"{failed} of {len(results)} requests failed; first job {first} "
            f"{'still there' if first in [job for job, _, _ in jobs] else 'gone'}; "
            f"{len(running)} job running at the end ({', '.join(running) or 'none'})")
    return [at_most(METRIC, [max(gaps, default=0.0)], GAP_TARGET, note)]


def _poll(port: int, duration: float) -> list[tuple[float, bool]]:
    """(time, answered) of a request to the local port every POLL seconds for `duration` seconds."""
    results: list[tuple[float, bool]] = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as response:
                ok = response.status == 200
        except OSError:
            ok = False
        results.append((time.monotonic(), ok))
        time.sleep(POLL)
    return results


def _gaps(results: list[tuple[float, bool]]) -> list[float]:
    """Each run of failed requests, from its first failure to the next answer (to the end when none came)."""
    gaps: list[float] = []
    since: float | None = None
    for at, ok in results:
        if not ok and since is None:
            since = at
        elif ok and since is not None:
            gaps.append(at - since)
            since = None
    if since is not None:
        gaps.append(results[-1][0] - since)
    return gaps
