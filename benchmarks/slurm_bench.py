"""A SLURM launch: `up` to ready on an idle cluster, against `sbatch` + polling by hand over the same SSH link.

The cluster is the test suite's (tests/slurm.py: the login node is the bench
sshd's network namespace, two compute nodes behind it). Both sides go through
the same delaying proxy (`--rtt-ms`). By hand is the least a person can do: one
`ssh` login that runs `sbatch --wrap` and then polls the status file on the
login node itself (no round trip per poll) until the service reports its port.
The launcher's overhead is the difference of the medians; the job's own start
(SLURM scheduling it and the node starting it) is in both.

Then stock JupyterLab (examples/jupyterlab-slurm.yaml, from the test suite's
cached venv): `up` (tunnel: true) until its token URL answers 200 on this
machine, next to JupyterLab's own start in a job submitted by hand (sbatch
until its log prints the URL, polled on the login node).
"""

from __future__ import annotations

import json
import shlex
import statistics
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from .common import CLEANUP, Row, at_most, launcher_argv, log, read_config, reference, timed_run, write_config
from .ssh_bench import Link, SSHSetup, Unavailable

if TYPE_CHECKING:
    from tests.slurm import SlurmCluster

ROOT = Path(__file__).resolve().parent.parent

OVERHEAD_TARGET = 0.6  # seconds: a few round trips at 50 ms, plus the interpreter and paramiko
BY_HAND = r"""
f=$HOME/rhl-bench-by-hand.json
echo '{}' > "$f"
id=$(sbatch --parsable --output=/dev/null --wrap "exec $1 $2 --status-file $f --host 0.0.0.0 --port-range 0 0")
until grep -q '"running"' "$f"; do sleep 0.02; done
echo "${id%%;*}"
"""
JUPYTER_BY_HAND = r"""
log=$HOME/rhl-bench-jupyter.log
: > "$log"
id=$(sbatch --parsable --output="$log" --wrap "exec $1/bin/jupyter lab --no-browser --ip 0.0.0.0 --port 0")
until grep -q 'token=' "$log"; do sleep 0.02; done
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
    data = read_config(config)
    data.update(hostname="127.0.0.1", network_interface="0.0.0.0", scheduler={"type": "slurm"})
    write_config(config, data)
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
    return [*_slurm_rows(link, ours, hand, round_trips, overhead), *_jupyterlab(setup, link, cluster, ssh, runs)]


def _slurm_rows(link: Link, ours: list[float], hand: list[float], round_trips: list[int],
                overhead: list[float]) -> list[Row]:
    return [
        reference(f"SLURM launch to ready, idle cluster, {link.label} (`up`, tunnel: false)", ours,
                  f"{statistics.median(round_trips):g} SSH round trips"),
        reference(f"SLURM by hand, {link.label} (ssh: sbatch, then poll the status file on the login node)", hand),
        at_most(f"SLURM launch overhead over sbatch by hand, {link.label}", overhead, OVERHEAD_TARGET),
    ]


def _jupyterlab(setup: SSHSetup, link: Link, cluster: SlurmCluster, ssh: list[str], runs: int) -> list[Row]:
    """`up` of the JupyterLab recipe to a 200 from its URL here, and JupyterLab's own start by hand."""
    import yaml

    from tests.interop import cached_venv
    from tests.test_recipes import STOCK_REQUIREMENTS

    log("JupyterLab as a SLURM job: the recipe's venv (cached; minutes the first time)")
    venv = str(cached_venv(setup.server.python, STOCK_REQUIREMENTS, "the JupyterLab benchmark"))
    recipe = yaml.safe_load((ROOT / "examples" / "jupyterlab-slurm.yaml").read_text())
    config = setup.config(link, tunnel=True)
    data = read_config(config)
    data.update(network_interface="0.0.0.0", scheduler={"type": "slurm"}, handshake=None, venv=venv,
                command=recipe["command"], url_pattern=recipe["url_pattern"], startup_timeout=300,
                key=f"{data['key']}-jupyterlab")
    config = config.with_name(f"{data['key']}.yaml")
    write_config(config, data)
    by_hand = [*ssh, f"sh -c {shlex.quote(JUPYTER_BY_HAND)} by-hand {shlex.quote(venv)}"]
    ours: list[float] = []
    hand: list[float] = []
    for i in range(runs + 1):  # the first of each is a warm-up
        cluster.cancel_all()
        setup.clean_remote()
        setup.forget_client(config)
        start = time.perf_counter()
        _, done = timed_run([*launcher_argv(config), "--json"], setup.env(), timeout=300)
        with urllib.request.urlopen(json.loads(done.stdout)["url"], timeout=60) as response:
            assert response.status == 200
        if i:
            ours.append(time.perf_counter() - start)
        setup.forget_client(config)
        cluster.cancel_all()
        elapsed, _ = timed_run(by_hand, setup.env(), timeout=300)
        if i:
            hand.append(elapsed)
    cluster.cancel_all()
    setup.clean_remote()
    return [
        reference(f"JupyterLab as a SLURM job, {link.label}: `up` to its token URL answering here "
                  "(stock server, tunnel)", ours),
        reference(f"JupyterLab's own start in a job by hand, {link.label} (sbatch until its log shows the URL)",
                  hand),
    ]
