"""The broker under faults and load, against the real test sshd: out of file descriptors, stopped (SIGSTOP),
and a huge single-line log. Each command must go on (through the broker, or logged in itself), never hang.

Logins are counted in the sshd's own log, as in tests/test_broker.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remote_http_launcher.broker.client import BrokeredHost
from remote_http_launcher.broker.registry import live_brokers
from remote_http_launcher.connect import open_ssh
from remote_http_launcher.errors import HostError
from tests.conftest import alive
from tests.ssh_client import ALIAS
from tests.test_broker import ACCEPTED, brokers, get, listening_at, write

if TYPE_CHECKING:
    from tests.remote import RemoteConfig
    from tests.sshd import SSHServer

LOW_LIMIT = 256  # macOS's default `ulimit -n`
FLOOD = 300
CONNECT_WAIT = 2.0
SHORT_WAIT = 0.1  # for a flood that may find the other end full


def logins(server: SSHServer) -> int:
    return server.log_text().count(ACCEPTED)


def run(*args: str | Path, limit: tuple[int, int] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, under an open-file limit (soft, hard) when given (a broker it starts inherits it)."""
    def apply() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)

    return subprocess.run([sys.executable, "-m", "remote_http_launcher", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=apply)


def ok(*args: str | Path, limit: tuple[int, int] | None = None, timeout: float = 60) -> str:
    result = run(*args, limit=limit, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(autouse=True)
def room_for_a_flood() -> Iterator[None]:
    """This process holds the flood's client ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * FLOOD)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def flood(family: socket.AddressFamily, address: str | tuple[str, int],
          every: bool = True) -> Iterator[list[socket.socket]]:
    """FLOOD connections held open (those the other end does not take within CONNECT_WAIT are left out; with
    `every`, none may be)."""
    held: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            sock = socket.socket(family)
            wait = CONNECT_WAIT if every else SHORT_WAIT
            sock.settimeout(wait)
            deadline = time.monotonic() + wait
            while True:
                try:
                    sock.connect(address)
                except BlockingIOError:  # a Unix socket's backlog is full: it says so at once
                    if time.monotonic() < deadline:
                        time.sleep(0.01)
                        continue
                    sock.close()
                except OSError:
                    sock.close()
                else:
                    held.append(sock)
                break
        assert len(held) == FLOOD or not every
        yield held
    finally:
        for sock in held:
            sock.close()


def closed_at_once(socks: list[socket.socket]) -> int:
    """How many of `socks` the other end has closed (each looked at for up to 0.2 s)."""
    closed = 0
    for sock in socks:
        sock.settimeout(0.2)
        try:
            closed += sock.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
    return closed


# ---------------------------------------------------------------- out of file descriptors


def test_the_broker_raises_its_open_file_limit(keyed_server: SSHServer, remote_config: RemoteConfig,
                                               rhl_dir: Path, tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config, limit=(LOW_LIMIT, 4096))
    (broker,) = brokers(rhl_dir)
    assert open_files_limit(broker) == 4096


def test_a_flood_of_idle_clients_leaves_the_broker_serving(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                           rhl_dir: Path, tmp_path: Path) -> None:
    """300 connections to its socket that never prove the key, under `ulimit -n 256`: the excess is closed
    at once (a command then logs in itself, quickly), and once they are gone the broker serves again."""
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config, limit=(LOW_LIMIT, LOW_LIMIT))
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    with flood(socket.AF_UNIX, listening_at(files)) as held:
        assert closed_at_once(held) >= FLOOD - LOW_LIMIT // 4 - 8
        started = time.monotonic()
        assert "running" in ok("status", config, timeout=30)
        assert time.monotonic() - started < 20
    before = logins(keyed_server)
    assert "running" in ok("status", config, timeout=30)
    assert logins(keyed_server) == before  # through the broker
    assert brokers(rhl_dir) == [owner.pid]


def test_a_flood_through_a_tunnel_leaves_the_broker_serving(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                            rhl_dir: Path, tmp_path: Path) -> None:
    """300 TCP connections held open through one tunnel's local port, under `ulimit -n 256`: the excess is
    closed at once, the broker does not spin, and commands still go through it."""
    config = write(tmp_path, "a", remote_config(keyed_server, tunnel=True))
    payload = json.loads(ok(config, "--json", limit=(LOW_LIMIT, LOW_LIMIT)))
    (broker,) = brokers(rhl_dir)
    before = logins(keyed_server)
    with flood(socket.AF_INET, ("127.0.0.1", payload["port"])) as held:
        assert closed_at_once(held) >= FLOOD - LOW_LIMIT // 4 - 8
        cpu = cpu_seconds(broker)
        time.sleep(2)
        assert cpu_seconds(broker) - cpu < 0.5
        assert "running" in ok("status", config, timeout=30)
        assert logins(keyed_server) == before  # through the broker
    assert brokers(rhl_dir) == [broker]



def test_a_broker_out_of_descriptors_accepts_again(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                   rhl_dir: Path, tmp_path: Path) -> None:
    """Three tunnels and its socket flooded under `ulimit -n 256`: within their caps they take all the
    broker's descriptors. It says so once, and once the floods end its socket and every forward accept again."""
    one = remote_config(keyed_server, tunnel=True)
    payloads = [json.loads(ok(write(tmp_path, f"t{n}", {**one, "key": f"{one['key']}-{n}"}), "--json",
                              limit=(LOW_LIMIT, LOW_LIMIT))) for n in range(3)]
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    before = logins(keyed_server)
    with contextlib.ExitStack() as floods:
        for payload in payloads:
            floods.enter_context(flood(socket.AF_INET, ("127.0.0.1", payload["port"]), every=False))
        floods.enter_context(flood(socket.AF_UNIX, listening_at(files), every=False))
        time.sleep(1)
    time.sleep(2)
    assert "running" in ok("status", write(tmp_path, "t0", {**one, "key": f"{one['key']}-0"}), timeout=30)
    assert logins(keyed_server) == before  # through the broker
    assert [get(payload) for payload in payloads] == [200, 200, 200]
    assert brokers(rhl_dir) == [owner.pid]
    assert Path(files.log).read_text().count("out of file descriptors") >= 1

# ---------------------------------------------------------------- a broker alive but stuck (SIGSTOP)


def thread_state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:  # a thread that ended
        return "T"


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process stopped (every thread of it: the signal takes effect a moment after it is sent)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while not all(thread_state(task) == "T" for task in Path(f"/proc/{pid}/task").iterdir()):
            assert time.monotonic() < deadline, "not stopped"
            time.sleep(0.01)
        yield
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)


def test_a_stopped_broker_holds_no_command(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                           tmp_path: Path) -> None:
    """Stopped, its socket's queue full: `status` logs in itself (and says so at debug level), `connections`
    lists it unanswered, `disconnect` ends it (cleanly: it removes its files), each within seconds."""
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config)
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    queued: list[socket.socket] = []
    with stopped(owner.pid):
        try:
            while True:
                sock = socket.socket(socket.AF_UNIX)
                sock.setblocking(False)
                queued.append(sock)
                sock.connect(listening_at(files))
        except BlockingIOError:
            pass
        finally:
            for sock in queued:
                sock.close()
        started = time.monotonic()
        result = run("status", config, "--log-level", "debug", timeout=60)
        assert result.returncode == 0 and "running" in result.stdout, result.stderr
        assert "logging in directly" in result.stderr
        assert time.monotonic() - started < 30
        started = time.monotonic()
        (entry,) = json.loads(ok("connections", "--json", timeout=30))["connections"]
        assert entry["pid"] == owner.pid and entry["last_use"] is None
        assert f"pid {owner.pid}" in ok("disconnect", ALIAS, timeout=30)
        assert time.monotonic() - started < 15
        assert not alive(owner.pid)
    assert not Path(listening_at(files)).exists() and not Path(files.lock).exists() and not Path(files.key).exists()


def test_a_broker_stopped_mid_command(keyed_server: SSHServer, rhl_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A request the broker does not answer in its bound: a read is made on a login of the command's own;
    a create is not repeated (it fails in one line), and the broker, continued, does not make it late."""
    monkeypatch.setattr("remote_http_launcher.broker.client.REQUEST_TIMEOUT", 2.0, raising=False)
    host = open_ssh(ALIAS, 60)
    worker = ThreadPoolExecutor(1)  # one thread, so one proven connection: the requests go where `home` went
    try:
        assert isinstance(host, BrokeredHost)
        home = worker.submit(lambda: host.home).result(30)
        ((_files, owner),) = live_brokers(rhl_dir / "brokers")
        with stopped(owner.pid):
            create = worker.submit(host.create_exclusive, f"{home}/made-late", b"x")
            with pytest.raises(HostError, match="did not answer create_exclusive within 2 s and may still make it"):
                create.result(30)
            assert worker.submit(host.read, f"{home}/absent").result(30) is None
            assert host.fallback is not None and not isinstance(host.fallback, BrokeredHost)
        time.sleep(1)  # the continued broker reads the request its client gave up on
        assert keyed_server.run("test -e made-late").returncode != 0
        assert alive(owner.pid)
    finally:
        worker.shutdown(wait=False)
        host.close()
    again = open_ssh(ALIAS, 60)
    try:
        assert isinstance(again, BrokeredHost) and again.create_exclusive(f"{home}/made-late", b"x")
        assert again.fallback is None
    finally:
        again.close()
        keyed_server.run("rm -f made-late")


def test_the_request_tables_name_relayed_requests() -> None:
    from remote_http_launcher.broker.client import REPEATABLE, SCRIPT_METHODS
    from remote_http_launcher.broker.protocol import RECALL, RELAYED

    assert (REPEATABLE | SCRIPT_METHODS) - {"info", RECALL} <= set(RELAYED)


# ---------------------------------------------------------------- a log of one huge line


HUGE_LOG = 200 << 20


def logs_with_peak(*args: str | Path, out: Path) -> tuple[int, int]:
    """`logs ARGS` in a subprocess: its exit status and its peak memory (KiB, its own VmHWM: Linux carries the
    forking process's RSS, pytest's, into a child's ru_maxrss); its output goes to `out`."""
    peak = out.with_name(out.name + ".peak")
    probe = ("import sys\n"
             "from remote_http_launcher.cli import main\n"
             "try:\n"
             "    code = main()\n"
             "finally:\n"
             "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
             f"    open({str(peak)!r}, 'w').write(hwm)\n"
             "sys.exit(code)\n")
    with out.open("wb") as sink:
        proc = subprocess.run([sys.executable, "-c", probe, "logs", *map(str, args)], stdout=sink,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=300)
    return proc.returncode, int(peak.read_text())


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("persist", ["600", "0"], ids=["through the broker", "logged in directly"])
def test_the_tail_of_a_huge_single_line_log_is_bounded(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                       rhl_dir: Path, tmp_path: Path, persist: str) -> None:
    """`logs --tail 3` of a 200 MB log that is one line (a progress bar redrawn with \\r): at most the cap is
    read and printed, after a line saying so, and neither the command nor the broker holds the log."""
    from remote_http_launcher.commands.logs import TAIL_MAX_BYTES, cut_marker

    raw = remote_config(keyed_server)
    config = write(tmp_path, "a", raw)
    ok(config)
    (broker,) = brokers(rhl_dir)
    state = json.loads(keyed_server.run(f"cat .remote-http-launcher/server/{raw['key']}.json").stdout)
    grown = keyed_server.run(f"printf 'progress' >> {state['log']} && truncate -s +{HUGE_LOG} {state['log']}")
    assert grown.returncode == 0, grown.stderr
    out = tmp_path / "tail.out"
    code, peak = logs_with_peak(config, "--tail", "3", "--connection-persist", persist, out=out)
    assert code == 0
    printed = out.read_bytes()
    assert printed.startswith(cut_marker(TAIL_MAX_BYTES)) and len(printed) <= TAIL_MAX_BYTES + 200
    assert peak < 150 << 10
    assert peak_kib(broker) < 100 << 10


def test_follow_reads_a_burst_a_bounded_piece_at_a_time() -> None:
    from remote_http_launcher.commands.logs import follow_file
    from tests.fakehost import FakeHost

    host = FakeHost()
    burst = bytes(range(256)) * (20 << 12)  # 20 MiB written between two reads
    host.files["/log"] = burst
    pieces = list(follow_file(host, "/log", 0, lambda: False, interval=0, max_bytes=1 << 20))
    assert b"".join(pieces) == burst and max(map(len, pieces)) == 1 << 20
