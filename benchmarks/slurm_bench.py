"""A SLURM launch: `up` to ready on an idle cluster, against `sbatch` + polling by hand over the same SSH link.

The cluster is the test suite's (tests/slurm.py: the login node is the bench
sshd's network namespace, two compute nodes behind it). Both sides go through
the same delaying proxy (`--rtt-ms`). By hand is the least a person can do: one
`ssh` login that runs `sbatch --wrap` and then polls the status file on the
login node itself (no round trip per poll) until the service reports its port.
The launcher's overhead is the difference of the medians; the job's own start
(SLURM scheduling it and the node starting it) is in both.
"""

from __future__ import annotations

import json
import shlex
import statistics

from .common import CLEANUP, Row, at_most, launcher_argv, log, reference, timed_run
from .ssh_bench import SSHSetup, Unavailable

OVERHEAD_TARGET = 0.6  # seconds: a few round trips at 50 ms, plus the interpreter and paramiko
BY_HAND = r"""
f=$HOME/rhl-bench-by-hand.json
echo '{}' > "$f"
id=$(sbatch --parsable --output=/dev/null --wrap "exec $1 $2 --status-file $f --host 0.0.0.0 --port-range 0 0")
until grep -q '"running"' "$f"; do sleep 0.02; done
echo "${id%%;*}"
"""


def run_slurm(runs: int, rtt: float) -> list[Row]:
    import pytest

    from tests.slurm import start_cluster

    log("setting up sshd and a SLURM cluster behind it")
    try:
        setup = SSHSetup.create([rtt])
        cluster = start_cluster(setup.server)
    except (Unavailable, pytest.skip.Exception, pytest.fail.Exception, RuntimeError) as exc:
        return [Row("SLURM launch", f"skipped: {str(exc).splitlines()[0]}", "")]
    CLEANUP.push("SLURM cluster", cluster.close)
    link = setup.links[0]
    config = setup.config(link, tunnel=False)
    data = json.loads(config.read_text())
    data.update(hostname="127.0.0.1", network_interface="0.0.0.0", scheduler={"type": "slurm"})
    config.write_text(json.dumps(data) + "\n")
    ssh = ["ssh", "-F", str(setup.client_home / ".ssh" / "config"),
           "-o", f"UserKnownHostsFile={setup.client_home / '.ssh' / 'known_hosts'}", "-o", "BatchMode=yes",
           "-i", str(setup.server.client_key), link.alias]
    by_hand = [*ssh, f"sh -c {shlex.quote(BY_HAND)} by-hand {shlex.quote(setup.server.python)} "
                     f"{shlex.quote(setup.remote_service)}"]

    ours: list[float] = []
    hand: list[float] = []
    round_trips: list[int] = []
    log(f"SLURM launch, {link.label}: {runs} runs each, launcher and by hand alternating")
    for i in range(runs + 1):  # the first of each is a warm-up
        cluster.cancel_all()
        setup.clean_remote()
        setup.forget_client(config)
        link.ssh_proxy.reset()
        elapsed, _ = timed_run(launcher_argv(config), setup.env(), timeout=180)
        if i:
            ours.append(elapsed)
            round_trips.append(link.ssh_proxy.counters.round_trips())
        cluster.cancel_all()
        elapsed, _ = timed_run(by_hand, setup.env(), timeout=180)
        if i:
            hand.append(elapsed)
    cluster.cancel_all()
    overhead = [a - b for a, b in zip(sorted(ours), sorted(hand), strict=True)]
    return [
        reference(f"SLURM launch to ready, idle cluster, {link.label} (`up`, tunnel: false)", ours,
                  f"{statistics.median(round_trips):g} SSH round trips"),
        reference(f"SLURM by hand, {link.label} (ssh: sbatch, then poll the status file on the login node)", hand),
        at_most(f"SLURM launch overhead over sbatch by hand, {link.label}", overhead, OVERHEAD_TARGET),
    ]
