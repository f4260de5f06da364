"""Services as Grid Engine jobs on a real test cluster (tests/gridengine.py), reached through the login node.

As test_slurm.py: the launcher logs in to the login node (the test sshd); the service runs as a batch job on
an execution host only the login node can reach, so every check, handshake and tunnel goes through it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher.commands.stop import stop_keeper
from tests.conftest import cli
from tests.gridengine import MAX_TIME, SLOTS
from tests.remote import keeper_processes
from tests.ssh_client import ALIAS, REMOTE_STATE, remote_state
from tests.test_slurm import MAX_GAP, get, key_of, up, up_in_background, wait_for, watch_hand_over

if TYPE_CHECKING:
    from tests.gridengine import GridEngineCluster
    from tests.remote import RemoteConfig
    from tests.sshd import SSHServer

WATCHDOG = 1  # seconds: the keeper checks the job this often


@pytest.fixture
def job_config(sge: GridEngineCluster, keyed_server: SSHServer, remote_config: RemoteConfig,
               tmp_path: Path) -> Callable[..., Path]:
    """`job_config(tunnel=True, options=[...], queue_timeout=None, renew_before=None, **fields)`: a config file of
    the demo service as a Grid Engine job, logging in to the cluster's login node."""

    def write(*, tunnel: bool = True, options: list[str] | None = None, queue_timeout: float | None = None,
              renew_before: float | None = None, name: str = "job.yaml", **fields: Any) -> Path:
        scheduler: dict[str, Any] = {"type": "sge", "options": options or []}
        if queue_timeout is not None:
            scheduler["queue_timeout"] = queue_timeout
        if renew_before is not None:
            scheduler["renew_before"] = renew_before
        config = remote_config(keyed_server, tunnel=tunnel, network_interface="0.0.0.0", scheduler=scheduler,
                               watchdog_interval=WATCHDOG, **fields)
        path = tmp_path / name
        path.write_text(json.dumps(config))
        return path

    return write


def test_launch_on_an_execution_host_through_the_login_node(sge: GridEngineCluster, job_config: Callable[..., Path],
                                                            keyed_server: SSHServer) -> None:
    config = job_config(options=["-l", "h_rt=01:00:00"])
    payload = up(config)
    key = key_of(config)
    state = remote_state(keyed_server, key)
    assert state is not None and state["status"] == "running"
    assert state["node"] in sge.nodes, state  # the job's own hostname, recorded by the job script
    jobs = sge.jobs()
    assert [(job, key_name) for job, _, key_name in jobs] == [(state["job_id"], key)]
    assert jobs[0][1] in ("t", "r")  # 't' until the execd reports the started job
    assert payload["tunneled-network-interface"] == state["node"]
    assert get(payload["port"]) == 200  # through the tunnel: this machine cannot reach the node itself
    assert sge.run(f"cat {REMOTE_STATE}/{key}.log").count("demo service listening") == 1

    status = cli("status", config, "--json")
    assert status.returncode == 0, status.stderr
    entry = json.loads(status.stdout)
    assert entry["status"] == "running"
    assert entry["job"] | {"time_left": None} == {"id": state["job_id"], "scheduler": "sge", "state": "r",
                                                  "node": state["node"], "reason": None, "time_left": None,
                                                  "start_estimate": None}
    hours, minutes, _ = entry["job"]["time_left"].split(":")
    assert (hours, minutes) in (("0", "59"), ("1", "00")), entry  # h_rt less the time it has run

    # The keeper is gone (the client file with it): the next `up` finds the job and reuses it.
    assert stop_keeper(key, None, timeout=5) is not None
    again = up(config)
    # no second job: the same one, running (`status` saw it so; the first listing may have caught its 't')
    assert sge.jobs() == [(job, "r", name) for job, _, name in jobs]
    assert get(again["port"]) == 200

    stopped = cli("stop", config)
    assert stopped.returncode == 0, stopped.stderr
    assert f"job {state['job_id']} with SIGTERM" in stopped.stdout  # the execd's notify signal, then it ended
    assert sge.jobs() == []
    assert remote_state(keyed_server, key) is None
    assert sge.run(f"ls {REMOTE_STATE}").split() == []  # status file, job script and log are gone
    assert keeper_processes(key) == []


def test_a_stock_server_gets_its_port_on_the_node(sge: GridEngineCluster, job_config: Callable[..., Path],
                                                  keyed_server: SSHServer) -> None:
    """A command reading {port} without a status file (a stock server): the port is chosen on the execution
    host by the job, and the tunnel reaches it there."""
    config = job_config(command=f"exec {keyed_server.python} -m http.server --bind 0.0.0.0 {{port}}",
                        handshake=None)
    payload = up(config)
    state = remote_state(keyed_server, key_of(config))
    assert state is not None and state["node"] in sge.nodes and state["port"] == payload["tunneled-port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{payload['port']}/", timeout=10) as response:
        assert response.status == 200
    assert cli("stop", config).returncode == 0
    assert sge.jobs() == []


def test_job_deleted_from_outside_is_noticed_and_the_next_up_resubmits(
        sge: GridEngineCluster, job_config: Callable[..., Path], rhl_dir: Path) -> None:
    config = job_config()
    payload = up(config)
    key = key_of(config)
    [(first_job, _, _)] = sge.jobs()
    client_file = rhl_dir / "client" / f"{key}.json"
    assert client_file.exists()
    sge.run(f"qdel {first_job}")
    wait_for(lambda: not client_file.exists(), 5 * WATCHDOG + 15, "the keeper to notice the job ended")
    assert f"job {first_job} has ended" in Path(payload["keeper_log"]).read_text()
    status = cli("status", config, "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["status"] == "stale"

    again = up(config)
    [(second_job, state, _)] = sge.jobs()
    assert second_job != first_job and state in ("t", "r")  # 't' until the execd reports the started job
    assert get(again["port"]) == 200


def test_queued_job_shows_its_reason_then_up_gives_up_and_deletes_it(
        sge: GridEngineCluster, job_config: Callable[..., Path]) -> None:
    blockers = sge.fill()
    config = job_config(queue_timeout=8)
    key = key_of(config)
    waiting = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", str(config), "--log-level", "basic"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: any(name == key for _, _, name in sge.jobs()), 30, "the job to be submitted")
        [(job, state, _)] = [entry for entry in sge.jobs() if entry[2] == key]
        assert state == "qw"
        entries: list[dict[str, Any]] = []

        def queued_with_reason() -> bool:  # Grid Engine gives a reason once its scheduler has looked at the job
            status = cli("status", config, "--json")
            assert status.returncode == 3, status.stderr
            entries.append(json.loads(status.stdout))
            return entries[-1]["detail"] is not None

        wait_for(queued_with_reason, 6, "a pending reason")
        entry = entries[-1]
        full = f'queue instance "{sge.queue}@{sge.nodes[0]}" dropped because it is full'
        assert entry["status"] == "queued" and entry["job"]["id"] == job and entry["detail"] == full
        assert f"queued ({full})" in cli("status", config).stdout
        listed = cli("list", "--host", ALIAS)
        assert listed.returncode == 0, listed.stderr
        assert any(line.startswith(key) and "queued (" in line and job in line
                   for line in listed.stdout.splitlines()), listed.stdout
        _, stderr = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {key}: job {job} queued: {full}") and \
        "for more than 8 s (cancelled the job)" in last, last
    assert sorted(entry[0] for entry in sge.jobs()) == sorted(blockers)  # ours is deleted; the blockers still run


def test_more_time_than_any_queue_offers_is_refused_by_qsub(sge: GridEngineCluster, job_config: Callable[..., Path],
                                                            keyed_server: SSHServer) -> None:
    config = job_config(options=["-l", "h_rt=48:00:00"])  # more than the queue's h_rt
    result = cli(config, timeout=60)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {key_of(config)}: submit on ") and "no suitable queues" in line, line
    assert sge.jobs() == []
    assert remote_state(keyed_server, key_of(config)) is None


def test_unverified_a_reason_that_never_clears_fails_at_once(sge: GridEngineCluster,
                                                            job_config: Callable[..., Path]) -> None:
    """With qsub's verification off (`-w n`), the scheduler's reason says it: the queue's limit."""
    config = job_config(options=["-w", "n", "-l", "h_rt=48:00:00"])
    result = cli(config, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f'cannot run in queue "{sge.queue}" because of cluster queue, which waiting cannot clear ' \
           "(cancelled the job); fix scheduler.options" in last, (last, MAX_TIME)
    assert sge.jobs() == []


def test_ten_racing_ups_submit_one_job_and_a_second_key_gets_its_own(
        sge: GridEngineCluster, job_config: Callable[..., Path]) -> None:
    config = job_config()
    with ThreadPoolExecutor(max_workers=10) as pool:
        payloads = list(pool.map(lambda _: up(config), range(10)))
    assert len({payload["port"] for payload in payloads}) == 1
    # one job, running: qstat may still say "t" (transferring) while the execution daemon's report of the job
    # it started (whose service already answered) is on its way to the master
    wait_for(lambda: [state for _, state, _ in sge.jobs()] == ["r"], 15, "one running job")

    other = job_config(key=f"{key_of(config)}-2", name="other.yaml")
    up(other)
    assert sorted(name for _, _, name in sge.jobs()) == sorted([key_of(config), key_of(other)])


def test_stop_deletes_a_queued_job_and_the_waiting_up_fails(sge: GridEngineCluster,
                                                             job_config: Callable[..., Path]) -> None:
    sge.fill()
    config = job_config()
    key = key_of(config)
    with up_in_background(config, sge.jobs) as (waiting, job, _):
        stopped = cli("stop", config)
        assert stopped.returncode == 0, stopped.stderr
        assert f"(job {job}, cancelled while queued)" in stopped.stdout
        _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert key not in [name for _, _, name in sge.jobs()]
    assert stderr.strip().splitlines()[-1].startswith(f"error: {key}: ")
    assert len(sge.jobs()) == SLOTS  # the blockers


def test_setup_lines_run_in_the_job_on_the_execution_host_and_a_failing_one_is_named(
        sge: GridEngineCluster, job_config: Callable[..., Path], keyed_server: SSHServer) -> None:
    config = job_config(setup=["export RHL_WHERE=$(hostname)", 'echo "$RHL_WHERE" > rhl-setup-ran'])
    up(config)
    state = remote_state(keyed_server, key_of(config))
    assert state is not None and state["node"] in sge.nodes
    assert sge.run("cat ~/rhl-work/rhl-setup-ran").strip() == state["node"]  # it ran on the node, in the job
    assert cli("stop", config).returncode == 0

    failing = job_config(name="failing.yaml", key="rhl-setup-fails",
                         setup=["true", "rhl-no-such-module load python", "touch rhl-setup-went-on"])
    result = cli(failing, timeout=120)
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert re.match(r"error: rhl-setup-fails: setup line 2 on \S+ failed \(status 127\): "
                    r"rhl-no-such-module load python; job \d+ ended", error), error
    assert sge.run("test -e ~/rhl-work/rhl-setup-went-on || echo absent").strip() == "absent"
    assert sge.jobs() == []


def test_a_job_near_its_h_rt_hands_its_tunnel_over_to_a_successor_on_the_same_local_port(
        sge: GridEngineCluster, job_config: Callable[..., Path], keyed_server: SSHServer, rhl_dir: Path) -> None:
    """As on SLURM: renew_before seconds before h_rt ends, the tunnel's holder submits the key's next job and
    moves the same local port to it once it answers; the first job ends, one job runs, the successor."""
    config = job_config(options=["-l", "h_rt=60"], renew_before=40)
    payload, first, second, poller, client_file = watch_hand_over(config, keyed_server, rhl_dir, 90)
    wait_for(lambda: first["job_id"] not in [job for job, _, _ in sge.jobs()], 30, "the first job to end")
    gap = poller.stop()
    assert gap <= MAX_GAP, poller.results
    assert [job for job, _, _ in sge.jobs()] == [second["job_id"]]
    followed = json.loads(client_file.read_text())
    assert followed["port"] == payload["port"]
    assert (followed["tunneled-network-interface"], followed["tunneled-port"]) == (second["node"], second["port"])
    assert get(payload["port"]) == 200
    stopped = cli("stop", config)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: sge.jobs() == [], 30, "every job of the key to end")
