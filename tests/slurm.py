"""A real SLURM cluster for the scheduler tests, as a pytest plugin module (see conftest.py).

The layout mirrors a real cluster:
* the login node is the test sshd's network namespace (tests/sshd.py); it runs
  `slurmctld`, and SSH logins (the launcher's, as the test user) land there;
* two compute nodes, each its own network namespace and UTS namespace (its own
  hostname), running one `slurmd -N NAME`, on a private bridge inside the login
  namespace: reachable from the login node only, never from this machine (the
  client), as on most clusters;
* node names are in /etc/hosts, so the login node's sshd resolves them for
  direct-tcpip channels; the filesystem (the test user's home) is shared, as
  cluster homes are;
* one `munged` on this machine (its socket is shared by all namespaces).

Debian 12's SLURM 22.05 facts this relies on: `slurmd` is started with
`nsenter --net` (`ip netns exec` remounts /sys, where slurmd then finds no
cgroup filesystem); `proctrack/linuxproc`, `task/none`; the spool directory
exists before slurmd starts; the munge key is 0400 and owned by `munge`. Pending jobs are looked at every
2 s (`sched_interval`; SLURM's default minute is what a released job would otherwise wait).

Fixture (module-scoped: one module uses it): ``slurm_cluster``. Without root or the packages
(`.ci/run` installs slurmctld, slurmd, slurm-client and munge) it skips with
the reason, and fails instead under CI=true. Everything it created (processes,
namespaces, bridge, /etc/hosts lines, the config file) is removed at the end.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.machine import machine_lock
from tests.posix import geteuid
from tests.sshd import SSHServer, _sh, _unavailable

SLURM_CONF = Path("/etc/slurm/slurm.conf")  # where sbatch/squeue of the SSH user look (no SLURM_CONF there)
ETC_HOSTS = Path("/etc/hosts")
MARKER = "# remote-http-launcher test cluster"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")
PROGRAMS = {"slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd", "sbatch": "/usr/bin/sbatch",
            "munged": "/usr/sbin/munged", "nsenter": "/usr/bin/nsenter", "unshare": "/usr/bin/unshare"}
PACKAGES = "apt-get install -y slurmctld slurmd slurm-client munge"
NODE_CPUS = 2
PARTITION = "rhltest"
SUBNET = "10.243.0"  # the private bridge, inside the login namespace only
START_TIMEOUT = 30.0
# SLURM's PBS wrappers (slurm-wlm-torque's qsub, qstat, qdel), unpacked here by .ci/run: the package conflicts
# with gridengine-client. Each finds sbatch, squeue and scancel in its own directory.
PBS_WRAPPERS = Path("/opt/rhl-slurm-torque/usr/bin")
PBS_COMMANDS = ("qsub", "qstat", "qdel")
MAX_TIME = "1-00:00:00"  # the partition's limit: a job asking for more waits for ever (PartitionTimeLimit)


@dataclass
class SlurmCluster:
    """A running test cluster; `login` is the sshd the launcher logs in to."""

    login: SSHServer
    nodes: list[str]
    partition: str
    base: Path
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _namespaces: list[str] = field(default_factory=list, repr=False)
    _bridge: str | None = field(default=None, repr=False)
    _munged_pid: int | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def run(self, cmd: str, *, check: bool = True) -> str:
        """`sh -c cmd` as the test user on the login node; its stdout."""
        result = self.login.run(cmd, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{cmd!r} failed on the login node: {result.stderr.strip()}")
        return result.stdout

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, state, name) of the test user's jobs that have not ended."""
        out = self.run("squeue -h -u \"$(id -un)\" -t PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED "
                       "-o '%i %T %j'")
        return [(parts[0], parts[1], parts[2]) for parts in (line.split() for line in out.splitlines()) if parts]

    def cancel_all(self) -> None:
        """Cancel every job of the test user and wait until none is left."""
        self.run('scancel -u "$(id -un)"', check=False)
        deadline = time.monotonic() + START_TIMEOUT
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.2)

    def fill(self) -> list[str]:
        """Occupy every CPU of every node with a sleeping job; their ids (running once this returns)."""
        ids = [self.run(f"sbatch --parsable --job-name=rhl-blocker --output=/dev/null --nodes=1 "
                        f"--cpus-per-task={NODE_CPUS} --wrap 'exec sleep 600'").strip().split(";")[0]
               for _ in self.nodes]
        deadline = time.monotonic() + START_TIMEOUT
        while any(state != "RUNNING" for job, state, _ in self.jobs() if job in ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"blocker jobs did not start: {self.jobs()}")
            time.sleep(0.1)
        return ids

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._munged_pid is not None:
            _kill(self._munged_pid)
        if self._bridge is not None and self.login.netns:
            subprocess.run(["ip", "-n", self.login.netns, "link", "del", self._bridge], capture_output=True)
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _remove_marked_lines(ETC_HOSTS)
        if SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text():
            SLURM_CONF.unlink()
        shutil.rmtree(self.base, ignore_errors=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _remove_marked_lines(path: Path) -> None:
    text = path.read_text()
    kept = [line for line in text.splitlines(keepends=True) if MARKER not in line]
    if len(kept) != len(text.splitlines()):
        path.write_text("".join(kept))


def _check_prerequisites(login: SSHServer) -> None:
    if geteuid() != 0:
        _unavailable("tests/slurm.py needs root (slurmctld, slurmd, network namespaces)")
    missing = [name for name, path in PROGRAMS.items() if not os.access(path, os.X_OK)]
    if missing:
        _unavailable(f"SLURM test cluster: missing {', '.join(missing)}: {PACKAGES}")
    if login.netns is None:
        _unavailable("SLURM test cluster: the login node needs the sshd's network namespace")
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text():
        _unavailable(f"{SLURM_CONF} exists and is not the test cluster's: refusing to replace a real config")


def _munge_works() -> bool:
    """A credential munged makes can be decoded: the daemon answers on its socket."""
    credential = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
    return credential.returncode == 0 and subprocess.run(
        ["unmunge"], input=credential.stdout, capture_output=True, timeout=10).returncode == 0


def _start_munged() -> int | None:
    """The PID of the munged started here, or None when one already answers."""
    if _munge_works():
        return None
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    for directory in (MUNGE_SOCKET_DIR, Path("/var/lib/munge"), Path("/var/log/munge")):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.chown(directory, "munge", "munge")
    _sh(["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "/usr/sbin/munged"])
    pid_file = MUNGE_SOCKET_DIR / "munged.pid"
    deadline = time.monotonic() + START_TIMEOUT
    while not _munge_works():
        if time.monotonic() > deadline:
            raise RuntimeError("munged did not answer")
        time.sleep(0.05)
    return int(pid_file.read_text()) if pid_file.exists() else None


def _slurm_conf(login_name: str, nodes: dict[str, str], base: Path) -> str:
    node_lines = "\n".join(f"NodeName={name} NodeAddr={addr} CPUs={NODE_CPUS} State=UNKNOWN"
                           for name, addr in nodes.items())
    return f"""{MARKER}
ClusterName=rhltest
SlurmctldHost={login_name}({SUBNET}.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool/%n
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd-%n.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=batch_sched_delay=0,sched_interval=2
ReturnToService=2
KillWait=5
MpiDefault=none
{node_lines}
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime={MAX_TIME} State=UP
"""


def start_cluster(login: SSHServer) -> SlurmCluster:
    """Compute namespaces on a bridge in the login namespace, munged, slurmctld, two slurmd; all idle."""
    _check_prerequisites(login)
    assert login.netns is not None
    token = secrets.token_hex(3)
    base = Path(tempfile.mkdtemp(prefix="rhl-slurm-"))
    base.chmod(0o755)  # slurmstepd runs the job script from the spool as the job's user
    nodes = {f"rhlc{token}n{i}": f"{SUBNET}.{i + 2}" for i in range(2)}
    cluster = SlurmCluster(login, list(nodes), PARTITION, base)
    atexit.register(cluster.close)
    try:
        cluster._bridge = f"rhlbr{token}"
        in_login = ["ip", "-n", login.netns]
        _sh([*in_login, "link", "add", cluster._bridge, "type", "bridge"])
        _sh([*in_login, "addr", "add", f"{SUBNET}.1/24", "dev", cluster._bridge])
        _sh([*in_login, "link", "set", cluster._bridge, "up"])
        for i, (name, addr) in enumerate(nodes.items()):
            ns = f"rhl-{token}-n{i}"
            _sh(["ip", "netns", "add", ns])
            cluster._namespaces.append(ns)
            outer, inner = f"rhl{token}b{i}", f"rhl{token}c{i}"
            _sh([*in_login, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns])
            _sh([*in_login, "link", "set", outer, "master", cluster._bridge, "up"])
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            _sh(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", inner])
            _sh(["ip", "-n", ns, "link", "set", inner, "up"])
            (base / "spool" / name).mkdir(parents=True)
        with ETC_HOSTS.open("a") as hosts:
            hosts.writelines(f"{addr} {name}  {MARKER}\n" for name, addr in nodes.items())
        (base / "state").mkdir()
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(_slurm_conf(socket.gethostname(), nodes, base))
        SLURM_CONF.chmod(0o644)
        cluster._munged_pid = _start_munged()
        netns = f"--net=/run/netns/{login.netns}"
        cluster._procs.append(_daemon(["nsenter", netns, "slurmctld", "-D", "-c", "-f", str(SLURM_CONF)],
                                      base / "slurmctld.out"))
        for i, name in enumerate(nodes):
            # Its own UTS namespace: `hostname` in a job names its node.
            cluster._procs.append(_daemon(
                ["unshare", "--uts", "sh", "-c", 'hostname "$1" && exec nsenter "$2" slurmd -D -N "$1" -f "$3"',
                 "slurmd", name, f"--net=/run/netns/{cluster._namespaces[i]}", str(SLURM_CONF)],
                base / f"slurmd-{name}.out"))
        _wait_idle(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _daemon(argv: list[str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_idle(cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    states = ""
    while time.monotonic() < deadline:
        for proc in cluster._procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited during start-up; see {cluster.base}:\n"
                                   + _logs(cluster.base))
        result = cluster.login.run("sinfo -h -N -o '%N %t'")
        states = result.stdout
        lines = [line.split() for line in states.splitlines() if line.strip()]
        if len(lines) == len(cluster.nodes) and all(state == "idle" for _, state in lines):
            return
        time.sleep(0.1)
    raise RuntimeError(f"SLURM nodes not idle within {START_TIMEOUT:.0f} s: {states}\n" + _logs(cluster.base))


def _logs(base: Path) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
                     for path in sorted(base.glob("*.log")) + sorted(base.glob("*.out")))


# Per module (one module uses it): the machine lock it holds is then free for the next cluster of this run.
@pytest.fixture(scope="module")
def slurm_cluster(sshd: SSHServer) -> Iterator[SlurmCluster]:
    """The test cluster (see the module doc); its login node is `sshd`."""
    sshd.start()
    lock = machine_lock()
    if geteuid() == 0 and SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text():
        _remove_marked_lines(ETC_HOSTS)  # left by a run that was killed
    cluster = start_cluster(sshd)
    try:
        yield cluster
    finally:
        cluster.close()
        lock.close()


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The cluster for one test; the test user's jobs are cancelled after it."""
    yield slurm_cluster
    slurm_cluster.cancel_all()
