"""Services as SLURM jobs on a real test cluster (tests/slurm.py), reached through the login node.

The launcher logs in to the login node (the test sshd) as usual; the service
runs as a batch job on a compute node that only the login node can reach, so
every check, handshake and tunnel has to go through it.
"""

from __future__ import annotations

import atexit
import json
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher.commands.stop import stop_keeper
from tests.conftest import cli
from tests.remote import keeper_processes
from tests.slurm import NODE_CPUS, PBS_COMMANDS, PBS_WRAPPERS
from tests.ssh_client import ALIAS, REMOTE_STATE, remote_state
from tests.sshd import launch_sshd

if TYPE_CHECKING:
    from tests.remote import RemoteConfig
    from tests.slurm import SlurmCluster
    from tests.sshd import SSHServer

WATCHDOG = 1  # seconds: the keeper checks the job this often


@pytest.fixture
def job_config(slurm: SlurmCluster, keyed_server: SSHServer, remote_config: RemoteConfig,
               tmp_path: Path) -> Callable[..., Path]:
    """`job_config(tunnel=True, options=[...], queue_timeout=None, renew_before=None, **fields)`: a config
    file of the demo service as a SLURM job, logging in to the cluster's login node."""

    def write(*, tunnel: bool = True, options: list[str] | None = None, queue_timeout: float | None = None,
              renew_before: float | None = None, name: str = "job.yaml", **fields: Any) -> Path:
        scheduler: dict[str, Any] = {"type": "slurm", "options": options or []}
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


def up(config: Path, *args: str) -> dict[str, Any]:
    result = cli(config, "--json", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def get(port: int, path: str = "/healthcheck") -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return int(response.status)


def key_of(config: Path) -> str:
    return str(json.loads(config.read_text())["key"])

@contextmanager
def up_in_background(config: Path, jobs: Callable[[], list[tuple[str, str, str]]],
                     *args: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`up CONFIG ARGS` in a process of its own, from the moment its job is submitted (the cluster's `jobs()`
    names it): (the process, the job's id, its state). The process is killed when the block ends."""
    key = key_of(config)
    waiting = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", str(config), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: any(name == key for _, _, name in jobs()), 30, "the job to be submitted")
        [(job, state, _)] = [entry for entry in jobs() if entry[2] == key]
        yield waiting, job, state
    finally:
        waiting.kill()



def test_launch_on_a_compute_node_through_the_login_node(slurm: SlurmCluster, job_config: Callable[..., Path],
                                                         keyed_server: SSHServer) -> None:
    config = job_config()
    payload = up(config)
    key = key_of(config)
    state = remote_state(keyed_server, key)
    assert state is not None and state["status"] == "running"
    assert state["node"] in slurm.nodes, state  # the job's own hostname, recorded by the job script
    jobs = slurm.jobs()
    assert jobs == [(state["job_id"], "RUNNING", key)]
    assert payload["tunneled-network-interface"] == state["node"]
    assert get(payload["port"]) == 200  # through the tunnel: this machine cannot reach the node itself
    assert slurm.run(f"cat {REMOTE_STATE}/{key}.log").count("demo service listening") == 1

    status = cli("status", config, "--json")
    assert status.returncode == 0, status.stderr
    entry = json.loads(status.stdout)
    assert entry["status"] == "running"
    assert entry["job"]["id"] == state["job_id"] and entry["job"]["node"] == state["node"]
    assert entry["job"]["time_left"]  # UNLIMITED on the test partition

    # The keeper is gone (the client file with it): the next `up` finds the job and reuses it.
    assert stop_keeper(key, None, timeout=5) is not None
    again = up(config)
    assert slurm.jobs() == jobs  # no second job
    assert get(again["port"]) == 200

    stopped = cli("stop", config)
    assert stopped.returncode == 0, stopped.stderr
    assert f"job {state['job_id']}" in stopped.stdout
    assert slurm.jobs() == []
    assert remote_state(keyed_server, key) is None
    assert slurm.run(f"ls {REMOTE_STATE}").split() == []  # status file, job script and log are gone
    assert keeper_processes(key) == []


@pytest.fixture(scope="session")
def stock_venv(sshd: SSHServer) -> str:
    from tests.interop import cached_venv
    from tests.test_recipes import STOCK_REQUIREMENTS

    return str(cached_venv(sshd.python, STOCK_REQUIREMENTS, "the stock-server recipes"))


def test_jupyterlab_recipe_as_a_job_through_the_login_node(slurm: SlurmCluster, job_config: Callable[..., Path],
                                                           keyed_server: SSHServer, stock_venv: str,
                                                           tmp_path: Path) -> None:
    """examples/jupyterlab-slurm.yaml, stock JupyterLab: its port chosen on the compute node, its token URL
    found in its log and rewritten to the tunnel; a client elsewhere (a fresh connection dir) reuses the job
    and gets the same URL (local_port pins the tunnel's end)."""
    import socket

    import yaml

    from tests.conftest import ROOT

    recipe = yaml.safe_load((ROOT / "examples" / "jupyterlab-slurm.yaml").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = int(probe.getsockname()[1])
    config = job_config(command=recipe["command"], url_pattern=recipe["url_pattern"], venv=stock_venv,
                        handshake=None, startup_timeout=recipe["startup_timeout"], local_port=local)
    key = key_of(config)
    payload = up(config)
    state = remote_state(keyed_server, key)
    assert state is not None and state["status"] == "running" and state["node"] in slurm.nodes
    assert state["url"].startswith("http://") and f":{state['port']}/lab?token=" in state["url"]
    token = state["url"].partition("?")[2]
    assert payload["url"] == f"http://127.0.0.1:{local}/lab?{token}"
    with urllib.request.urlopen(payload["url"], timeout=30) as response:
        assert response.status == 200
    assert slurm.run(f"stat -c %a {REMOTE_STATE}/{key}.json").strip() == "600"  # the token is in it

    assert stop_keeper(key, None, timeout=5) is not None  # this client goes away; another one comes
    other = cli(config, "--json", "--connection-dir", str(tmp_path / "elsewhere"), timeout=120)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["url"] == payload["url"]
    assert [job for job, _, _ in slurm.jobs()] == [state["job_id"]]  # the same job
    assert cli("stop", config).returncode == 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def test_job_cancelled_from_outside_is_noticed_and_the_next_up_resubmits(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer, rhl_dir: Path) -> None:
    config = job_config()
    payload = up(config)
    key = key_of(config)
    [(first_job, _, _)] = slurm.jobs()
    client_file = rhl_dir / "client" / f"{key}.json"
    assert client_file.exists()
    slurm.run(f"scancel {first_job}")
    # The tunnel's keeper (a keeper process, or the host's connection broker) notices, closes it, removes the file.
    wait_for(lambda: not client_file.exists(), 5 * WATCHDOG + 10, "the keeper to notice the job ended")
    assert f"job {first_job} has ended" in Path(payload["keeper_log"]).read_text()
    status = cli("status", config, "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["status"] == "stale"

    result = cli(config, "--json", "--log-level", "basic", timeout=120)
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    phases = [line.split("s ", 1)[1] for line in result.stderr.splitlines()]
    # No tunnel to the node of the job the scheduler says ended: one, to the new job's, after its launch
    assert phases.count("opening the tunnel") == 1, phases
    assert phases.index("opening the tunnel") > phases.index("launching service on " + ALIAS), phases
    [(second_job, state, _)] = slurm.jobs()
    assert second_job != first_job and state == "RUNNING"
    assert get(again["port"]) == 200


def test_queued_job_shows_its_reason_then_up_gives_up_and_cancels_it(
        slurm: SlurmCluster, job_config: Callable[..., Path], tmp_path: Path) -> None:
    blockers = slurm.fill()
    config = job_config(queue_timeout=6, options=[f"--cpus-per-task={NODE_CPUS}"])
    key = key_of(config)
    with up_in_background(config, slurm.jobs, "--log-level", "basic") as (waiting, job, state):
        assert state == "PENDING"
        entries: list[dict[str, Any]] = []

        def queued_with_reason() -> bool:  # SLURM gives a reason once its scheduler has looked at the job
            status = cli("status", config, "--json")
            assert status.returncode == 3, status.stderr
            entries.append(json.loads(status.stdout))
            return entries[-1]["detail"] is not None

        wait_for(queued_with_reason, 5, "a pending reason")
        entry = entries[-1]
        assert entry["status"] == "queued" and entry["job"]["id"] == job
        assert entry["detail"] in ("Resources", "Priority")
        text = cli("status", config).stdout
        assert "queued (Resources)" in text or "queued (Priority)" in text
        listed = cli("list", "--host", ALIAS)
        assert listed.returncode == 0, listed.stderr
        assert any(line.startswith(key) and f"queued ({entry['detail']})" in line and job in line
                   for line in listed.stdout.splitlines()), listed.stdout
        _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert f"job {job} queued: " in stderr  # the progress shows the reason while it waits
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {key}: job {job} queued: ") and "for more than 6 s (cancelled the job)" in last
    assert [entry[0] for entry in slurm.jobs()] == blockers  # ours is cancelled; the blockers still run


def test_setup_lines_run_in_the_job_on_the_compute_node_and_a_failing_one_is_named(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer) -> None:
    config = job_config(setup=["export RHL_WHERE=$(hostname)", 'echo "$RHL_WHERE" > rhl-setup-ran'])
    up(config)
    state = remote_state(keyed_server, key_of(config))
    assert state is not None
    assert slurm.run("cat ~/rhl-work/rhl-setup-ran").strip() == state["node"]  # it ran on the node, in the job
    assert cli("stop", config).returncode == 0

    failing = job_config(name="failing.yaml", key="rhl-setup-fails",
                         setup=["true", "rhl-no-such-module load python", "touch rhl-setup-went-on"])
    result = cli(failing, timeout=120)
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert re.match(r"error: rhl-setup-fails: setup line 2 on \S+ failed \(status 127\): "
                    r"rhl-no-such-module load python; job \d+ ended", error), error
    assert "not found" in result.stderr  # the log's tail
    assert slurm.run("test -e ~/rhl-work/rhl-setup-went-on || echo absent").strip() == "absent"
    assert slurm.jobs() == []


SLURM_COMMANDS = ("sbatch", "squeue", "scancel")
PROFILE_ALIAS = "profilelogin"


@pytest.fixture
def profile_login(slurm: SlurmCluster, keyed_server: SSHServer, client_home: Path) -> Iterator[SSHServer]:
    """The login node as a site whose scheduler commands only the login profile puts on PATH (a site's
    /etc/profile.d, a module system): a second sshd there, its sessions' PATH a directory of every program
    but SLURM's, and the user's ~/.profile adding a directory of SLURM's alone. PROFILE_ALIAS names it."""
    plain, site = f"{keyed_server.home}/rhl-plain-bin", f"{keyed_server.home}/rhl-site-bin"
    skip = " ".join([*SLURM_COMMANDS, *PBS_COMMANDS, "qsig"])  # Grid Engine's qsub may be on this machine
    keyed_server.run(f"""set -e
mkdir -p {plain} {site}
for program in /usr/local/bin/* /usr/bin/*; do
  case " {skip} " in *" ${{program##*/}} "*) ;; *) ln -sf "$program" {plain}/ ;; esac
done
for name in {" ".join(SLURM_COMMANDS)}; do ln -sf /usr/bin/$name {site}/; done
for name in {" ".join(PBS_COMMANDS)}; do
  [ ! -x {PBS_WRAPPERS}/$name ] || ln -sf {PBS_WRAPPERS}/$name {site}/
done
printf 'PATH={site}:$PATH\nexport PATH\n' > ~/.profile""", check=True)
    server = launch_sshd(keyed_server._account, f"profile-{secrets.token_hex(3)}", keyed_server._ns,
                         config_overrides={"SetEnv": f"PATH={plain}"})
    atexit.unregister(server.close)  # it shares the login node's namespace, which outlives it
    server.write_ssh_config(client_home, PROFILE_ALIAS)
    try:
        yield server
    finally:
        server.stop()
        keyed_server.run(f"rm -rf {plain} {site} ~/.profile")


def test_scheduler_commands_only_the_login_profile_puts_on_path_are_found_and_named_in_the_debug_log(
        slurm: SlurmCluster, profile_login: SSHServer, remote_config: RemoteConfig, tmp_path: Path) -> None:
    client = profile_login.connect()  # an SSH session's PATH (the test user's run() is not one) lacks sbatch
    try:
        _, out, _ = client.exec_command("command -v sbatch || echo none")
        assert out.read().decode().strip() == "none"
    finally:
        client.close()
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(remote_config(profile_login, tunnel=True, network_interface="0.0.0.0",
                                               ssh_hostname=PROFILE_ALIAS, scheduler={"type": "slurm"},
                                               watchdog_interval=WATCHDOG)))
    result = cli(config, "--json", "--log-level", "debug", timeout=120)
    assert result.returncode == 0, result.stderr
    site = f"{profile_login.home}/rhl-site-bin"
    assert f"using sbatch: {site}/sbatch on {PROFILE_ALIAS}" in result.stderr
    assert f"using squeue: {site}/squeue on {PROFILE_ALIAS}" in result.stderr
    assert get(json.loads(result.stdout)["port"]) == 200
    stopped = cli("stop", config, "--log-level", "debug")
    assert stopped.returncode == 0, stopped.stderr
    assert f"using scancel: {site}/scancel on {PROFILE_ALIAS}" in stopped.stderr
    assert slurm.jobs() == []


def test_a_scheduler_command_found_nowhere_is_one_line_naming_it_and_where_it_looked(
        slurm: SlurmCluster, profile_login: SSHServer, remote_config: RemoteConfig, tmp_path: Path) -> None:
    plain = f"{profile_login.home}/rhl-plain-bin"  # the login profile no longer adds SLURM's directory
    profile_login.run(f"echo PATH={plain} > ~/.profile", check=True)
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(remote_config(profile_login, network_interface="0.0.0.0",
                                               ssh_hostname=PROFILE_ALIAS, scheduler={"type": "slurm"})))
    result = cli(config, timeout=60)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    key = json.loads(config.read_text())["key"]
    assert error == (f"error: {key}: scheduler on {PROFILE_ALIAS}: sbatch not found on PATH ({plain}) nor by the "
                     "login shell (/bin/sh -l)"), error


def test_a_pbs_job_through_slurms_pbs_wrappers_found_on_the_login_profile(
        slurm: SlurmCluster, profile_login: SSHServer, remote_config: RemoteConfig, tmp_path: Path) -> None:
    """The PBS backend's own commands (qsub, qstat -f, qdel) as SLURM's PBS wrappers (slurm-wlm-torque) run
    them: a job launched, its node and time left in `status`, stopped; qsig is not there, so qdel stops it."""
    if not (PBS_WRAPPERS / "qsub").exists():
        pytest.skip(f"SLURM's PBS wrappers are not unpacked in {PBS_WRAPPERS} (.ci/run does it)")
    config = tmp_path / "pbs.yaml"
    config.write_text(json.dumps(remote_config(profile_login, tunnel=True, network_interface="0.0.0.0",
                                               ssh_hostname=PROFILE_ALIAS, watchdog_interval=WATCHDOG,
                                               scheduler={"type": "pbs", "options": ["-l", "walltime=00:30:00"]})))
    result = cli(config, "--json", "--log-level", "debug", timeout=120)
    assert result.returncode == 0, result.stderr
    site = f"{profile_login.home}/rhl-site-bin"
    assert f"using qsub: {site}/qsub on {PROFILE_ALIAS}" in result.stderr
    assert f"using qstat: {site}/qstat on {PROFILE_ALIAS}" in result.stderr
    key = json.loads(config.read_text())["key"]
    state = remote_state(profile_login, key)
    assert state is not None and state["scheduler"] == "pbs" and state["node"] in slurm.nodes, state
    assert slurm.jobs() == [(state["job_id"], "RUNNING", key)]  # one job, named after the key (qsub -N)
    assert get(json.loads(result.stdout)["port"]) == 200
    assert slurm.run(f"cat {REMOTE_STATE}/{key}.log").count("demo service listening") == 1  # the job's output

    status = cli("status", config, "--json")
    assert status.returncode == 0, status.stderr
    job = json.loads(status.stdout)["job"]
    assert (job["id"], job["node"], job["time_left"]) == (state["job_id"], state["node"], "0:30:00")

    stopped = cli("stop", config, "--log-level", "debug")
    assert stopped.returncode == 0, stopped.stderr
    assert f"using qdel: {site}/qdel on {PROFILE_ALIAS}" in stopped.stderr
    assert slurm.jobs() == []
    assert remote_state(profile_login, key) is None


def test_ctrl_c_while_the_job_is_queued_cancels_it_and_says_so(slurm: SlurmCluster,
                                                               job_config: Callable[..., Path]) -> None:
    """A queued job left behind would start later, unwatched, and use its walltime: Ctrl-C cancels it."""
    blockers = slurm.fill()
    config = job_config(tunnel=False, options=[f"--cpus-per-task={NODE_CPUS}"])
    with up_in_background(config, slurm.jobs, "--log-level", "basic") as (waiting, job, state):
        assert state == "PENDING"
        waiting.send_signal(signal.SIGINT)
        _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == f"error: interrupted; cancelled job {job}, which was still queued"
    assert [entry[0] for entry in slurm.jobs()] == blockers  # ours is gone; the blockers still run


def test_a_reason_that_never_clears_fails_at_once(slurm: SlurmCluster, job_config: Callable[..., Path]) -> None:
    config = job_config(options=["--time=2-00:00:00"])  # more than the partition allows
    result = cli(config, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(r"queued: Partition(Config|TimeLimit), which waiting cannot clear \(cancelled the job\); "
                     "fix scheduler.options$", last), last
    assert slurm.jobs() == []


def test_an_invalid_partition_fails_at_once_with_sbatchs_message(slurm: SlurmCluster,
                                                                  job_config: Callable[..., Path],
                                                                  keyed_server: SSHServer) -> None:
    config = job_config(options=["--partition=nosuchpartition"])
    result = cli(config, timeout=60)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {key_of(config)}: submit on ") and "invalid partition" in line.lower(), line
    assert ": sbatch: error: " in line and "sbatch: sbatch:" not in line, line  # its own words, named once
    assert slurm.jobs() == []
    assert remote_state(keyed_server, key_of(config)) is None


def test_ten_racing_ups_submit_one_job_and_a_second_key_gets_its_own(
        slurm: SlurmCluster, job_config: Callable[..., Path]) -> None:
    config = job_config()
    with ThreadPoolExecutor(max_workers=10) as pool:
        payloads = list(pool.map(lambda _: up(config), range(10)))
    assert len({payload["port"] for payload in payloads}) == 1
    jobs = slurm.jobs()
    assert len(jobs) == 1 and jobs[0][1] == "RUNNING"

    other = job_config(key=f"{key_of(config)}-2", name="other.yaml")
    up(other)
    assert sorted(name for _, _, name in slurm.jobs()) == sorted([key_of(config), key_of(other)])


def test_direct_mode_names_the_node_and_logs_come_from_the_job(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer) -> None:
    config = job_config(tunnel=False, workdir="~/rhl-work/job dir/it's $HOME")  # quoted all the way to the node
    payload = up(config)
    state = remote_state(keyed_server, key_of(config))
    assert state is not None
    assert state["workdir"] == f"{keyed_server.home}/rhl-work/job dir/it's $HOME"
    assert slurm.run(f"cat {REMOTE_STATE}/{key_of(config)}.log").startswith(
        f"demo service starting, pid {state['pid']}")  # the job's process is the service (exec)
    assert payload["hostname"] == state["node"] and payload["port"] == state["port"]
    node_answer = slurm.run(f"python3 -c \"import urllib.request as u; "
                            f"print(u.urlopen('http://{payload['hostname']}:{payload['port']}/healthcheck').status)\"")
    assert node_answer.strip() == "200"  # clients inside the cluster reach it by that name
    logs = cli("logs", config, "--tail", "5")
    assert logs.returncode == 0 and "demo service listening" in logs.stdout
    stopped = cli("stop", config)
    assert stopped.returncode == 0 and f"job {state['job_id']} with SIGTERM" in stopped.stdout
    assert slurm.jobs() == []


def test_stop_cancels_a_queued_job_and_the_waiting_up_fails(slurm: SlurmCluster,
                                                             job_config: Callable[..., Path]) -> None:
    slurm.fill()
    config = job_config(options=[f"--cpus-per-task={NODE_CPUS}"])
    key = key_of(config)
    with up_in_background(config, slurm.jobs) as (waiting, job, _):
        stopped = cli("stop", config)
        assert stopped.returncode == 0, stopped.stderr
        assert f"(job {job}, cancelled while queued)" in stopped.stdout
        _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert key not in [name for _, _, name in slurm.jobs()]
    assert stderr.strip().splitlines()[-1].startswith(f"error: {key}: ")


def test_without_a_handshake_the_port_is_checked_from_the_login_node_and_left_unverified(
        slurm: SlurmCluster, job_config: Callable[..., Path]) -> None:
    config = job_config(handshake=None)  # the login node sees neither the node's processes nor its sockets
    payload = up(config)
    assert get(payload["port"]) == 200
    status = cli("status", config, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["port_listener"] == "unverified"
    assert len(slurm.jobs()) == 1


def test_a_requeued_job_is_queued_again_then_its_tunnel_follows_it_to_its_new_node(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer, rhl_dir: Path) -> None:
    """A requeue (a node failure, or an admin's) restarts the job under the same id on another node and
    port: `status` says queued while it waits (non-zero), the stale client file goes, and once the new run
    reports, the tunnel forwards the same local port to it."""
    config = job_config()
    payload = up(config)
    key = key_of(config)
    first = remote_state(keyed_server, key)
    assert first is not None
    job, client_file = first["job_id"], rhl_dir / "client" / f"{key}.json"
    slurm.run(f"scontrol requeuehold {job}")  # held: it waits for us, where a plain requeue waits for a node

    def queued_again() -> bool:
        status = cli("status", config, "--json")
        entry = json.loads(status.stdout)
        return status.returncode == 3 and entry["status"] == "queued" and "requeued" in (entry["detail"] or "")

    wait_for(queued_again, 30, "status to say the job is queued again")
    wait_for(lambda: not client_file.exists(), 5 * WATCHDOG + 10, "the client file of the dead run to go")
    slurm.run(f"scontrol update JobId={job} ExcNodeList={first['node']}")  # its new run is elsewhere, for sure
    slurm.run(f"scontrol release {job}")
    slurm.run(f"scontrol update JobId={job} StartTime=now")  # SLURM delays a requeued job's start (BeginTime)

    def moved() -> bool:
        state = remote_state(keyed_server, key)
        return client_file.exists() and state is not None and state["node"] != first["node"] \
            and state["status"] == "running"

    wait_for(moved, 60, "the job's new run and its forward")
    second = remote_state(keyed_server, key)
    assert second is not None and second["job_id"] == job and (first.get("restarts"), second.get("restarts")) == (0, 1)
    followed = json.loads(client_file.read_text())
    assert followed["port"] == payload["port"] and followed["tunneled-network-interface"] == second["node"]
    assert followed["tunneled-port"] == second["port"]
    assert get(payload["port"]) == 200  # the same local port reaches the new run
    status = cli("status", config, "--json")
    assert status.returncode == 0, status.stdout
    assert json.loads(status.stdout)["job"]["node"] == second["node"]


# Walltime renewal, scaled down: SLURM keeps walltimes in whole minutes and ends an expired job within its
# 30 s time-limit sweep (plus KillWait), so a one-minute job is renewed 40 s before its end, 20 s into it.
WALLTIME, RENEW_BEFORE = "--time=1", 40
POLL = 0.5  # seconds between the polling client's requests
MAX_GAP = 2.0  # seconds of failed requests the hand-over may cost a polling client


class Poller:
    """A client polling the tunnel's local port every POLL seconds on a thread: (time, answered) of each."""

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.results: list[tuple[float, bool]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthcheck", timeout=2) as response:
                    ok = response.status == 200
            except OSError:
                ok = False
            self.results.append((time.monotonic(), ok))
            self.stopped.wait(POLL)

    def stop(self) -> float:
        """Stop; the longest stretch of failed requests, in seconds (first failure to next success)."""
        self.stopped.set()
        self.thread.join()
        gap, since = 0.0, None
        for at, ok in self.results:
            if not ok and since is None:
                since = at
            elif ok and since is not None:
                gap, since = max(gap, at - since), None
        return gap if since is None else float("inf")


def successor_files(slurm: SlurmCluster, key: str) -> list[str]:
    return [name for name in slurm.run(f"ls -a {REMOTE_STATE}").split() if name.startswith(key) and
            name.endswith(".next")]


def watch_hand_over(config: Path, keyed_server: SSHServer, rhl_dir: Path,
                    within: float) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Poller, Path]:
    """`up` a job config with `renew_before`, poll its local port, and wait until the key's record is a running
    successor job the client file forwards to: (the client payload, the first job's record, the successor's,
    the poller, the client file)."""
    payload = up(config)
    key = key_of(config)
    first = remote_state(keyed_server, key)
    assert first is not None and first["status"] == "running"
    client_file = rhl_dir / "client" / f"{key}.json"
    poller = Poller(payload["port"])

    def handed_over() -> bool:
        state = remote_state(keyed_server, key)
        return state is not None and state["job_id"] != first["job_id"] and state["status"] == "running" \
            and json.loads(client_file.read_text()).get("tunneled-port") == state["port"]

    wait_for(handed_over, within, "the tunnel to move to the successor job")
    second = remote_state(keyed_server, key)
    assert second is not None and second["successor_of"] == first["job_id"]
    return payload, first, second, poller, client_file


def test_a_job_near_its_walltime_hands_its_tunnel_over_to_a_successor_on_the_same_local_port(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer, rhl_dir: Path) -> None:
    """renew_before seconds before the walltime ends, the keeper submits the key's next job, forwards the
    same local port to it once it answers (a polling client sees no gap beyond MAX_GAP), rewrites the
    status and client files, then ends the first job: one job runs, the successor."""
    config = job_config(options=[WALLTIME], renew_before=RENEW_BEFORE)
    payload, first, second, poller, client_file = watch_hand_over(config, keyed_server, rhl_dir,
                                                                  60 - RENEW_BEFORE + 60)
    key = key_of(config)
    wait_for(lambda: first["job_id"] not in [job for job, _, _ in slurm.jobs()], 20, "the first job to end")
    time.sleep(3 * POLL)
    gap = poller.stop()
    assert gap <= MAX_GAP, poller.results
    assert len(poller.results) > 10
    assert slurm.jobs() == [(second["job_id"], "RUNNING", key)]
    followed = json.loads(client_file.read_text())
    assert followed["port"] == payload["port"]  # the same local port, now to the successor's node and port
    assert (followed["tunneled-network-interface"], followed["tunneled-port"]) == (second["node"], second["port"])
    assert get(payload["port"]) == 200
    assert successor_files(slurm, key) == []  # renamed over the key's own at the hand-over
    status = cli("status", config, "--json")
    assert status.returncode == 0, status.stdout
    assert json.loads(status.stdout)["job"]["id"] == second["job_id"]

    stopped = cli("stop", config)
    assert stopped.returncode == 0, stopped.stderr
    assert slurm.jobs() == [] and successor_files(slurm, key) == []  # a successor submitted meanwhile too


def test_a_successor_still_queued_when_the_job_ends_is_waited_for_on_the_same_local_port(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer, rhl_dir: Path) -> None:
    """The old job ends while its successor is held in the queue: the local port stays bound, `status` says
    "queued successor: REASON" and the client file goes; once released, the successor takes the port over."""
    config = job_config(options=[WALLTIME], renew_before=RENEW_BEFORE)
    payload = up(config)
    key = key_of(config)
    first = remote_state(keyed_server, key)
    assert first is not None
    client_file = rhl_dir / "client" / f"{key}.json"

    # Every other CPU busy: the successor pends (Resources) until we hold it, so it cannot start first.
    blockers = [slurm.run("sbatch --parsable --job-name=rhl-blocker --output=/dev/null --cpus-per-task=1 "
                          "--wrap 'exec sleep 600'").strip().split(";")[0] for _ in range(2 * NODE_CPUS - 1)]
    wait_for(lambda: all(state == "RUNNING" for job, state, _ in slurm.jobs() if job in blockers), 30,
             "the blocker jobs to run")

    def successor() -> str | None:
        return next((job for job, _, name in slurm.jobs() if job != first["job_id"] and name == key), None)

    wait_for(lambda: successor() is not None, 60 - RENEW_BEFORE + 30, "the successor's submission")
    held = successor()
    slurm.run(f"scontrol hold {held}")
    slurm.run(f"scancel {' '.join(blockers)}")

    def queued_successor() -> bool:
        status = cli("status", config, "--json")
        entry = json.loads(status.stdout)
        return status.returncode == 3 and entry["status"] == "queued" and \
            (entry["detail"] or "").startswith("queued successor: ") and entry["job"]["id"] == held

    wait_for(queued_successor, 120, "the first job to end and status to name its queued successor")
    wait_for(lambda: not client_file.exists(), 10, "the client file naming the ended job to go")
    with socket.create_connection(("127.0.0.1", payload["port"]), timeout=5):
        pass  # still bound: a client gets a connection (closed at once), not a refused port
    slurm.run(f"scontrol release {held}")

    def handed_over() -> bool:
        state = remote_state(keyed_server, key)
        return client_file.exists() and state is not None and state["job_id"] == held \
            and state["status"] == "running"

    # A released job waits for SLURM's next scheduling pass (the test cluster's sched_interval) to start.
    wait_for(handed_over, 150, "the released successor to take the tunnel over")
    assert json.loads(client_file.read_text())["port"] == payload["port"]
    assert get(payload["port"]) == 200
    assert [job for job, _, _ in slurm.jobs()] == [held]
    assert successor_files(slurm, key) == []
    stopped = cli("stop", config)
    assert stopped.returncode == 0, stopped.stderr
    assert slurm.jobs() == []


def test_stop_cancels_a_successor_whose_tunnel_holder_was_killed(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer, rhl_dir: Path) -> None:
    """A holder killed between the successor's submission and the hand-over leaves the successor's job and
    files behind; `stop` ends both jobs and removes them."""
    import os
    import signal

    config = job_config(options=[WALLTIME], renew_before=RENEW_BEFORE)
    up(config)
    key = key_of(config)
    wait_for(lambda: len(slurm.jobs()) == 2 and successor_files(slurm, key) != [], 60 - RENEW_BEFORE + 30,
             "the successor's submission")
    holder = json.loads((rhl_dir / "client" / f"{key}.json").read_text())["keeper_pid"]
    os.kill(holder, signal.SIGKILL)
    stopped = cli("stop", config)
    assert stopped.returncode == 0, stopped.stderr
    assert slurm.jobs() == [] and successor_files(slurm, key) == []
    assert remote_state(keyed_server, key) is None


def test_a_queued_successor_whose_holder_is_gone_is_taken_up_by_the_next_up(
        slurm: SlurmCluster, job_config: Callable[..., Path], keyed_server: SSHServer, rhl_dir: Path) -> None:
    """The old job ended, its successor is the key's queued record, and the tunnel's holder is gone: the next
    `up` waits for that job (its run reports under the successor's own name) instead of submitting another."""
    import os
    import signal

    config = job_config(options=[WALLTIME], renew_before=RENEW_BEFORE)
    up(config)
    key = key_of(config)
    first = remote_state(keyed_server, key)
    assert first is not None
    blockers = [slurm.run("sbatch --parsable --job-name=rhl-blocker --output=/dev/null --cpus-per-task=1 "
                          "--wrap 'exec sleep 600'").strip().split(";")[0] for _ in range(2 * NODE_CPUS - 1)]
    wait_for(lambda: len([job for job, state, _ in slurm.jobs() if job in blockers and state == "RUNNING"]) ==
             len(blockers), 30, "the blocker jobs to run")
    wait_for(lambda: successor_files(slurm, key) != [], 60 - RENEW_BEFORE + 30, "the successor's submission")
    held = next(job for job, _, name in slurm.jobs() if job != first["job_id"] and name == key)
    slurm.run(f"scontrol hold {held}")
    slurm.run(f"scancel {' '.join(blockers)}")

    def successor_is_the_record() -> bool:
        state = remote_state(keyed_server, key)
        return state is not None and state["job_id"] == held

    wait_for(successor_is_the_record, 120, "the first job to end and its successor's record to be the key's")
    holder = json.loads((rhl_dir / "client" / f"{key}.keeper.lock").read_text().splitlines()[0] or "{}")
    os.kill(int(holder["pid"]), signal.SIGKILL)
    slurm.run(f"scontrol release {held}")
    payload = up(config)
    assert get(payload["port"]) == 200
    assert [job for job, _, _ in slurm.jobs()] == [held]
    state = remote_state(keyed_server, key)
    assert state is not None and state["job_id"] == held and state["status"] == "running"
