"""A real Grid Engine cluster (Debian 12's Son of Grid Engine 8.1.9) for the scheduler tests, as a pytest
plugin module (see conftest.py); built as tests/slurm.py builds its SLURM cluster.

* the login node is the test sshd's network namespace (tests/sshd.py): SSH logins land there, and so does
  `sge_qmaster`, in a UTS namespace of its own whose host name resolves to the login node's bridge address
  (the user's qsub reaches it there, so every client is the master host, the login node's own name an alias
  of it in the cell's host_aliases: a submit and admin host);
* one execution host, `sge_execd` in its own network, UTS and mount namespace, on a private bridge inside the
  login namespace: reachable from the login node only, never from this machine (the client);
* Grid Engine checks that a host's name and its address agree both ways: /etc/hosts names the master and the
  node for the login node (and the sshd's direct-tcpip channels), and the execution host sees a hosts file
  of its own (bind-mounted over /etc/hosts in its mount namespace) naming both, with `hostname` its own name;
* the cell is Debian's `default` under /var/lib/gridengine (where the user's qsub looks: its wrapper reads
  /etc/default/gridengine), classic spooling in a temporary directory; the execd sends TERM as its notify
  signal (execd_params NOTIFY_KILL=TERM), which qdel of a job submitted with -notify sends first.

Fixture (module-scoped: one module uses it): ``sge_cluster``. Without root or the packages (`.ci/run` installs
gridengine-master, gridengine-exec and gridengine-client) it skips with the reason, and fails instead under
CI=true. It holds the machine lock (tests/machine.py) while it runs; everything it created (processes,
namespaces, bridge, /etc/hosts lines, the cell's files) is removed at the end.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
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

SGE_ROOT = Path("/var/lib/gridengine")
CELL = SGE_ROOT / "default" / "common"  # the cell the user's commands use (/etc/default/gridengine)
OURS = CELL / "rhl-test-cluster"  # present while the cell is the test cluster's: the names the cell had before
SAVED_BOOTSTRAP = CELL / "rhl-test-cluster.bootstrap"  # the cell's own bootstrap, back when the cluster ends
ETC_HOSTS = Path("/etc/hosts")
MARKER = "# remote-http-launcher test grid engine"
PROGRAMS = {"sge_qmaster": "/usr/sbin/sge_qmaster", "sge_execd": "/usr/sbin/sge_execd", "qsub": "/usr/bin/qsub",
            "spoolinit": "/usr/lib/gridengine/spoolinit", "nsenter": "/usr/bin/nsenter", "unshare": "/usr/bin/unshare"}
PACKAGES = "apt-get install -y gridengine-master gridengine-exec gridengine-client"
SLOTS = 2  # of the one execution host
QUEUE = "rhltest.q"
MAX_TIME = "24:00:00"  # the queue's h_rt: a job asking for more can never run there
SUBNET = "10.244.0"
START_TIMEOUT = 60.0
DEFAULTS = Path("/usr/share/gridengine")


@dataclass
class GridEngineCluster:
    """A running test cluster; `login` is the sshd the launcher logs in to."""

    login: SSHServer
    nodes: list[str]
    queue: str
    base: Path
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _namespaces: list[str] = field(default_factory=list, repr=False)
    _bridge: str | None = field(default=None, repr=False)
    _cell_files: set[str] = field(default_factory=set, repr=False)
    _closed: bool = field(default=False, repr=False)

    def run(self, cmd: str, *, check: bool = True) -> str:
        """`sh -c cmd` as the test user on the login node; its stdout."""
        result = self.login.run(cmd, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{cmd!r} failed on the login node: {result.stderr.strip()}")
        return result.stdout

    def admin(self, *argv: str) -> str:
        """A Grid Engine command as root (a manager) on the login node."""
        assert self.login.netns is not None
        return _sh(["nsenter", f"--net=/run/netns/{self.login.netns}", *argv])

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, state letters, name) of the test user's jobs that have not ended."""
        from xml.etree import ElementTree  # qstat's list truncates names; its XML does not

        root = ElementTree.fromstring(self.run('qstat -xml -u "$(id -un)"'))
        return [(job.findtext("JB_job_number", ""), job.findtext("state", ""), job.findtext("JB_name", ""))
                for job in root.iter("job_list")]

    def cancel_all(self) -> None:
        """Delete every job of the test user and wait until none is left."""
        self.run('qdel -u "$(id -un)"', check=False)
        deadline = time.monotonic() + START_TIMEOUT
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.2)

    def fill(self) -> list[str]:
        """Occupy every slot with a sleeping job; their ids (running once this returns)."""
        ids = [self.run("echo 'exec sleep 600' | qsub -terse -N rhl-blocker -o /dev/null -j y -S /bin/sh").strip()
               for _ in range(SLOTS * len(self.nodes))]
        deadline = time.monotonic() + START_TIMEOUT
        while any(state != "r" for job, state, _ in self.jobs() if job in ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"blocker jobs did not start: {self.jobs()}")
            time.sleep(0.1)
        return ids

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._procs and self._procs[0].poll() is None:
            subprocess.run(["nsenter", f"--net=/run/netns/{self.login.netns}", "qdel", "-u", "*"],
                           capture_output=True, timeout=30)
        for proc in reversed(self._procs):  # the execd first: the master hears it leave
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._bridge is not None and self.login.netns:
            subprocess.run(["ip", "-n", self.login.netns, "link", "del", self._bridge], capture_output=True)
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _remove_marked_lines(ETC_HOSTS)
        _restore_cell()
        shutil.rmtree(self.base, ignore_errors=True)


def _remove_marked_lines(path: Path) -> None:
    text = path.read_text()
    kept = [line for line in text.splitlines(keepends=True) if MARKER not in line]
    if len(kept) != len(text.splitlines()):
        path.write_text("".join(kept))


def _restore_cell() -> None:
    """The cell's common directory as the package left it: its bootstrap back, what the cluster added gone."""
    if not OURS.exists():
        return
    shutil.copy(SAVED_BOOTSTRAP if SAVED_BOOTSTRAP.exists() else DEFAULTS / "default-bootstrap", CELL / "bootstrap")
    original = set(OURS.read_text().split())
    for path in CELL.iterdir():
        if path.name not in original:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _own_names() -> list[str]:
    """The names this machine's `hostname` resolves to, forth and back."""
    names = [socket.gethostname(), "localhost"]
    try:
        names.append(socket.gethostbyaddr(socket.gethostbyname(names[0]))[0])
    except OSError:
        pass
    return sorted(set(names))


def _check_prerequisites(login: SSHServer) -> None:
    if geteuid() != 0:
        _unavailable("tests/gridengine.py needs root (sge_qmaster, sge_execd, namespaces)")
    missing = [name for name, path in PROGRAMS.items() if not os.access(path, os.X_OK)]
    if missing:
        _unavailable(f"Grid Engine test cluster: missing {', '.join(missing)}: {PACKAGES}")
    if login.netns is None:
        _unavailable("Grid Engine test cluster: the login node needs the sshd's network namespace")
    if (CELL / "act_qmaster").exists() and not OURS.exists():
        _unavailable(f"{CELL} holds a Grid Engine cell that is not the test cluster's: refusing to replace it")


def _bootstrap(base: Path) -> str:
    return f"""admin_user              none
default_domain          none
ignore_fqdn             true
spooling_method         classic
spooling_lib            libspoolc
spooling_params         {CELL};{base}/qmaster
binary_path             /usr/sbin
qmaster_spool_dir       {base}/qmaster
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
"""


def _global_configuration(base: Path) -> str:
    """Debian's default configuration, with the spool here, load reports often, and TERM as notify signal."""
    changes = {"execd_spool_dir": str(base / "execd"), "execd_params": "NOTIFY_KILL=TERM",
               "load_report_time": "00:00:02", "max_unheard": "00:00:30"}
    lines = (DEFAULTS / "default-configuration").read_text().splitlines()
    return "\n".join(f"{line.split()[0]:<22} {changes[line.split()[0]]}" if line.split() and line.split()[0] in changes
                     else line for line in lines) + "\n"


def _edit_script(base: Path, name: str, values: dict[str, str]) -> Path:
    """An EDITOR for `qconf -a*`/`-m*` that sets `values` in the file it is given."""
    script = base / f"edit-{name}.sh"
    expressions = " ".join(f"-e 's#^{key} .*#{key} {value}#'" for key, value in values.items())
    script.write_text(f'#!/bin/sh\nsed -i {expressions} "$1"\n')
    script.chmod(0o700)
    return script


def start_cluster(login: SSHServer) -> GridEngineCluster:
    """Namespaces on a bridge in the login namespace, the cell, sge_qmaster and one sge_execd; its queue ready."""
    _check_prerequisites(login)
    assert login.netns is not None
    token = secrets.token_hex(3)
    base = Path(tempfile.mkdtemp(prefix="rhl-sge-"))
    base.chmod(0o755)  # the shepherd runs the job script from the execd's spool as the job's user
    master, node = f"rhlg{token}m", f"rhlg{token}n0"
    nodes = {node: f"{SUBNET}.2"}
    cluster = GridEngineCluster(login, list(nodes), QUEUE, base)
    atexit.register(cluster.close)
    try:
        cluster._bridge = f"rhlgb{token}"
        in_login = ["ip", "-n", login.netns]
        _sh([*in_login, "link", "add", cluster._bridge, "type", "bridge"])
        _sh([*in_login, "addr", "add", f"{SUBNET}.1/24", "dev", cluster._bridge])
        _sh([*in_login, "link", "set", cluster._bridge, "up"])
        ns = f"rhl-{token}-g0"
        _sh(["ip", "netns", "add", ns])
        cluster._namespaces.append(ns)
        outer, inner = f"rhl{token}gb", f"rhl{token}gc"
        _sh([*in_login, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns])
        _sh([*in_login, "link", "set", outer, "master", cluster._bridge, "up"])
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        _sh(["ip", "-n", ns, "addr", "add", f"{nodes[node]}/24", "dev", inner])
        _sh(["ip", "-n", ns, "link", "set", inner, "up"])
        names = {master: f"{SUBNET}.1", **nodes}
        with ETC_HOSTS.open("a") as hosts:
            hosts.writelines(f"{addr} {name}  {MARKER}\n" for name, addr in names.items())
        node_hosts = base / "hosts.node"
        node_hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{addr} {name}\n" for name, addr in names.items()))
        node_hosts.chmod(0o644)

        _restore_cell()  # left by a run that was killed
        OURS.write_text("".join(f"{path.name}\n" for path in sorted(CELL.iterdir())))
        shutil.copy(CELL / "bootstrap", SAVED_BOOTSTRAP)
        for directory in ("qmaster", "execd"):
            (base / directory).mkdir()
        (CELL / "bootstrap").write_text(_bootstrap(base))
        (CELL / "act_qmaster").write_text(master + "\n")
        # A client names itself by its own `hostname` (the login node's is this machine's), resolved there and
        # back (here 127.0.0.1: localhost), and connects from the master's address: one host to Grid Engine.
        (CELL / "host_aliases").write_text(" ".join([master, *_own_names()]) + "\n")
        env = {**os.environ, "SGE_ROOT": str(SGE_ROOT), "SGE_CELL": "default"}
        (base / "configuration").write_text(_global_configuration(base))
        for step in (["spoolinit", "classic", "libspoolc", f"{CELL};{base}/qmaster", "init"],
                     ["spooldefaults", "configuration", str(base / "configuration")],
                     ["spooldefaults", "complexes", str(DEFAULTS / "util" / "resources" / "centry")],
                     ["spooldefaults", "usersets", str(DEFAULTS / "util" / "resources" / "usersets")],
                     ["spooldefaults", "managers", "root"]):
            subprocess.run([f"/usr/lib/gridengine/{step[0]}", *step[1:]], env=env, check=True, capture_output=True)

        netns = f"--net=/run/netns/{login.netns}"
        daemon_env = {**env, "SGE_ND": "1"}  # stay in the foreground
        cluster._procs.append(_daemon(
            ["unshare", "--uts", "sh", "-c", 'hostname "$1" && exec nsenter "$2" /usr/sbin/sge_qmaster',
             "sge_qmaster", master, netns], base / "qmaster.out", daemon_env))
        _wait(lambda: subprocess.run(["nsenter", netns, "qconf", "-sh"], env=env, capture_output=True).returncode == 0,
              cluster, "sge_qmaster to answer")
        sconf = cluster.admin("qconf", "-ssconf")
        changes = {"schedule_interval": "0:0:1", "schedd_job_info": "true", "flush_submit_sec": "1",
                   "flush_finish_sec": "1"}
        (base / "sconf").write_text("\n".join(f"{line.split()[0]} {changes[line.split()[0]]}"
                                              if line.split() and line.split()[0] in changes else line
                                              for line in sconf.splitlines()) + "\n")
        cluster.admin("qconf", "-Msconf", str(base / "sconf"))
        cluster.admin("qconf", "-as", master)  # an admin host already
        (base / "exechost").write_text(f"hostname {node}\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\n"
                                       "xuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\n"
                                       "report_variables NONE\n")
        cluster.admin("qconf", "-Ae", str(base / "exechost"))
        cluster._procs.append(_daemon(
            ["unshare", "--uts", "--mount", "sh", "-c",
             'hostname "$1" && mount --bind "$2" /etc/hosts && exec nsenter "$3" /usr/sbin/sge_execd',
             "sge_execd", node, str(node_hosts), f"--net=/run/netns/{ns}"], base / "execd.out", daemon_env))
        editor = _edit_script(base, "queue", {"qname": QUEUE, "hostlist": node, "slots": str(SLOTS),
                                              "shell": "/bin/sh", "notify": "00:00:05", "h_rt": MAX_TIME,
                                              "pe_list": "NONE", "load_thresholds": "NONE"})
        _sh(["nsenter", netns, "env", f"EDITOR={editor}", "qconf", "-aq", QUEUE])
        _wait(lambda: _queue_ready(cluster, node), cluster, "the execution host to report")
    except BaseException:
        cluster.close()
        raise
    return cluster


def _queue_ready(cluster: GridEngineCluster, node: str) -> bool:
    """The queue instance on `node` is there and in no state (not u(nknown), a(larm), d(isabled)...)."""
    lines = cluster.admin("qstat", "-f", "-q", QUEUE).splitlines()
    return any(line.split()[0] == f"{QUEUE}@{node}" and len(line.split()) == 5 for line in lines if line.strip())


def _wait(condition: object, cluster: GridEngineCluster, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        for proc in cluster._procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited during start-up; see {cluster.base}:\n" + _logs(cluster))
        if time.monotonic() > deadline:
            raise RuntimeError(f"Grid Engine: timed out waiting for {what}:\n" + _logs(cluster))
        time.sleep(0.2)


def _daemon(argv: list[str], output: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with output.open("wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _logs(cluster: GridEngineCluster) -> str:
    paths = [*sorted(cluster.base.glob("*.out")), cluster.base / "qmaster" / "messages",
             *sorted((cluster.base / "execd").glob("*/messages"))]
    return "\n".join(f"--- {path}\n{path.read_text(errors='replace')[-2000:]}" for path in paths if path.exists())


# Per module (one module uses it): the machine lock it holds is then free for the next cluster of this run.
@pytest.fixture(scope="module")
def sge_cluster(sshd: SSHServer) -> Iterator[GridEngineCluster]:
    """The test cluster (see the module doc); its login node is `sshd`."""
    sshd.start()
    lock = machine_lock()
    if geteuid() == 0 and OURS.exists():  # left by a run that was killed
        _remove_marked_lines(ETC_HOSTS)
    cluster = start_cluster(sshd)
    try:
        yield cluster
    finally:
        cluster.close()
        lock.close()


@pytest.fixture
def sge(sge_cluster: GridEngineCluster) -> Iterator[GridEngineCluster]:
    """The cluster for one test; the test user's jobs are deleted after it."""
    yield sge_cluster
    sge_cluster.cancel_all()
