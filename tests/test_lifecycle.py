"""status, stop, logs and list against real demo services on this machine.

The CLI runs as a real subprocess (so stdout purity and exit codes are the
real thing); the Python API is called in-process.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import remote_http_launcher
from remote_http_launcher import LaunchError, processes, run
from remote_http_launcher.commands import logs as log_command
from remote_http_launcher.hosts import LocalHost
from remote_http_launcher.hosts.base import Host
from remote_http_launcher.tunnels.lock import KeeperLock

from .conftest import alive, cli
from .posix import SIGKILL, killpg
from .ssh_client import ALIAS, demo_config

KEY = "demo-localhost"
Factory = Callable[..., dict[str, Any]]


# Helpers ----------------------------------------------------------------------------

def cli_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    proc = cli(*args, "--json")
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def http_get(port: int, path: str = "/healthcheck") -> bytes:
    with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=5) as response:
        body: bytes = response.read()
        return body


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def server_file(rhl_dir: Path, key: str = KEY) -> Path:
    return rhl_dir / "server" / f"{key}.json"


def client_path(rhl_dir: Path, key: str = KEY) -> Path:
    return rhl_dir / "client" / f"{key}.json"


def server_pid(rhl_dir: Path, key: str = KEY) -> int:
    return int(json.loads(server_file(rhl_dir, key).read_text())["pid"])


def kill9(pid: int) -> None:
    killpg(pid, SIGKILL)
    wait_for(lambda: not alive(pid), what=f"process {pid} to die")


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process (own session, so a wrong group kill could not reach pytest)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# status ----------------------------------------------------------------------------

def test_status_through_the_life_cycle(rhl_dir: Path, config_file: Callable[..., Path], tmp_path: Path) -> None:
    config = config_file()
    code, entry = cli_json("status", config)
    assert (code, entry["status"], entry["pid"]) == (3, "absent", None)
    assert entry["client"] == {**entry["client"], "present": False, "connection_file": str(client_path(rhl_dir))}

    payload = run(config)
    code, entry = cli_json("status", config)
    assert (code, entry["status"], entry["detail"]) == (0, "running", None)
    assert entry["pid"] == server_pid(rhl_dir) and entry["port"] == payload["port"]
    assert 0 <= entry["uptime"] < 60
    assert entry["workdir"] == str(tmp_path / "work dir")
    assert entry["log"] == str(rhl_dir / "server" / f"{KEY}.log")
    assert entry["client"]["present"] is True and entry["client"]["port"] == payload["port"]
    assert entry["client"]["keeper_pid"] is None
    human = cli("status", config)
    assert human.returncode == 0 and human.stderr == ""
    assert human.stdout.startswith(f"{KEY} on localhost: running") and str(payload["port"]) in human.stdout

    kill9(entry["pid"])
    code, entry = cli_json("status", config)
    assert (code, entry["status"]) == (3, "stale")
    assert "is gone" in entry["detail"]
    human = cli("status", config)
    assert human.returncode == 3 and "stop CONFIG" in human.stdout

    stopped = cli("stop", config)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("not running; nothing to stop")
    assert not server_file(rhl_dir).exists() and not client_path(rhl_dir).exists()
    assert not (rhl_dir / "server" / f"{KEY}.log").exists()  # nor its log ('stop --keep-log' keeps it)

    code, entry = cli_json("status", config)
    assert (code, entry["status"]) == (3, "absent")
    again = cli("stop", config)
    assert (again.returncode, again.stdout) == (0, "not running; nothing to stop\n")


def test_status_starting(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file(args="--ready-delay 3")
    up = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", "up", str(config)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: remote_http_launcher.status(config)["status"] == "starting", what="status starting")
        code, entry = cli_json("status", config)
        assert (code, entry["status"]) == (3, "starting")
        assert entry["pid"] == server_pid(rhl_dir) and entry["port"] is None and entry["uptime"] >= 0
        assert up.wait(timeout=30) == 0
    finally:
        up.kill()
        up.wait()
    assert cli("status", config).returncode == 0


def test_status_failed(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file(args="--fail")
    with pytest.raises(LaunchError):
        run(config)
    code, entry = cli_json("status", config)
    assert (code, entry["status"]) == (3, "failed")
    human = cli("status", config).stdout
    assert ": failed" in human and "logs CONFIG" in human
    assert "failing on purpose" in remote_http_launcher.logs(config)
    result = remote_http_launcher.stop(config)
    assert result["status_before"] == "failed" and result["stopped"] is False
    assert result["message"].startswith("not running; nothing to stop")
    assert not server_file(rhl_dir).exists()


def test_status_of_a_service_that_died_while_starting_says_it_failed_at_launch(
        rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file(command="echo boom; exit 4")
    with pytest.raises(LaunchError):
        run(config)
    code, entry = cli_json("status", config)
    assert (code, entry["status"]) == (3, "stale")
    assert re.fullmatch(r"failed at launch: process \d+ exited before reporting its port", entry["detail"])
    human = cli("status", config).stdout
    assert f"{KEY} on localhost: stale (failed at launch: process " in human
    assert human.splitlines()[-1].split() == ["next", "see", "why", "with", "'remote-http-launcher", "logs",
                                              "CONFIG';", "relaunch", "with", "'remote-http-launcher", "CONFIG'"]


def test_ctrl_c_during_up_says_what_is_left_running_and_how_to_end_it(
        rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file(args="--ready-delay 30")
    command = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", str(config), "--log-level", "basic"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (server_file(rhl_dir).exists() and "pid" in json.loads(server_file(rhl_dir).read_text() or "{}")):
        assert time.monotonic() < deadline and command.poll() is None, "the service was never launched"
        time.sleep(0.05)
    time.sleep(0.3)  # the run is in its wait for the service
    pid = server_pid(rhl_dir)
    command.send_signal(signal.SIGINT)
    _, stderr = command.communicate(timeout=30)
    assert command.returncode == 130
    assert stderr.splitlines()[-1] == (
        f"error: interrupted; the service keeps starting on localhost (pid {pid}): 'remote-http-launcher CONFIG' "
        "picks it up again, 'remote-http-launcher stop CONFIG' ends it")
    assert processes.process_identity(pid) is not None  # it does keep running
    assert cli("stop", config).returncode == 0


def test_status_with_connection_dir(rhl_dir: Path, config_file: Callable[..., Path], tmp_path: Path) -> None:
    config, conn = config_file(), tmp_path / "conn"
    payload = run(config, connection_dir=conn)
    code, entry = cli_json("status", config, "--connection-dir", conn)
    assert code == 0
    assert entry["client"]["connection_file"] == str(conn / f"{KEY}.json")
    assert entry["client"]["present"] is True and entry["client"]["port"] == payload["port"]
    assert cli_json("status", config)[1]["client"]["present"] is False  # the default dir has none
    assert cli("stop", config, "--connection-dir", conn).returncode == 0
    assert not (conn / f"{KEY}.json").exists()


# stop ------------------------------------------------------------------------------

def test_stop_with_sigterm(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    port = run(config)["port"]
    service_pid = json.loads(http_get(port, "/"))["pid"]
    leader = server_pid(rhl_dir)
    code, result = cli_json("stop", config)
    assert code == 0
    assert result["stopped"] is True and result["processes"] == [{"pid": leader, "signal": "TERM"}]
    assert result["message"] == f"stopped {KEY} on localhost (pid {leader} with SIGTERM)"
    assert set(result["removed"]) == {"status file", "client file"}
    assert not alive(leader) and not alive(service_pid)
    assert not server_file(rhl_dir).exists() and not client_path(rhl_dir).exists()
    assert not (rhl_dir / "server" / f"{KEY}.log").exists() and result["logs_removed"] == [
        str(rhl_dir / "server" / f"{KEY}.log")]


def test_stop_escalates_to_sigkill(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file(args="--ignore-sigterm")
    port = run(config)["port"]
    service_pid = json.loads(http_get(port, "/"))["pid"]
    start = time.monotonic()
    proc = cli("stop", config, "--timeout", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "killed with SIGKILL" in proc.stdout
    assert time.monotonic() - start < 8
    assert not alive(service_pid)  # the whole group, not only its leader
    assert cli("status", config).returncode == 3


def test_stop_never_signals_a_reused_pid(rhl_dir: Path, config_file: Callable[..., Path],
                                         bystander: subprocess.Popen[bytes]) -> None:
    config = config_file()
    log = rhl_dir / "server" / f"{KEY}.log"
    server_file(rhl_dir).parent.mkdir(parents=True)
    server_file(rhl_dir).write_text(json.dumps({
        "status": "running", "pid": bystander.pid, "port": 9, "start_time": "proc:1", "log": str(log),
        "launched_at": time.time() - 90}))
    client_path(rhl_dir).parent.mkdir(parents=True)
    client_path(rhl_dir).write_text(json.dumps({"hostname": "localhost", "port": 9}))

    code, entry = cli_json("status", config)
    assert (code, entry["status"]) == (3, "stale")
    assert entry["detail"] == f"PID {bystander.pid} now belongs to another process"
    assert 89 <= entry["age"] < 200 and entry["uptime"] is None

    code, result = cli_json("stop", config, "--timeout", "0.5")
    assert code == 0 and result["stopped"] is False and result["processes"] == []
    assert result["refused"] == f"PID {bystander.pid} now belongs to another process"
    assert result["message"].startswith("not running; nothing to stop (PID")
    assert "left it alone" in result["message"]
    time.sleep(0.3)
    assert bystander.poll() is None  # never signalled
    assert not server_file(rhl_dir).exists() and not client_path(rhl_dir).exists()


def test_stop_removes_a_left_over_lock(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    run(config)
    lock = rhl_dir / "server" / f"{KEY}.lock"
    lock.write_text("{}")
    result = remote_http_launcher.stop(config)
    assert result["stopped"] is True and "lock file" in result["removed"]
    assert not lock.exists()


def test_stop_leaves_alone_a_keeper_lock_naming_another_process(
        rhl_dir: Path, config_file: Callable[..., Path], bystander: subprocess.Popen[bytes]) -> None:
    """The real keeper is stopped in tests/test_tunnel.py; here its lock names an unrelated process."""
    config = config_file()
    run(config)
    lock = KeeperLock(client_path(rhl_dir), KEY)
    Path(lock.path).write_text(json.dumps({"pid": bystander.pid, "started": processes.process_identity(bystander.pid),
                                     "token": "t", "payload": None}))
    entry = remote_http_launcher.status(config)
    assert entry["client"]["keeper_pid"] == bystander.pid and entry["client"]["keeper_alive"] is False
    result = remote_http_launcher.stop(config, timeout=2)
    assert result["stopped"] is True and result["keeper_pid"] is None
    assert "tunnel keeper" not in result["message"]
    time.sleep(0.2)
    assert bystander.poll() is None  # never signalled


# logs ------------------------------------------------------------------------------

def test_logs_tail(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    port = run(config)["port"]
    for n in range(5):
        http_get(port, f"/?n={n}")
    log_text = (rhl_dir / "server" / f"{KEY}.log").read_text()

    proc = cli("logs", config, "--tail", "3")
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and [f"GET /?n={n} " in line for n, line in zip((2, 3, 4), lines, strict=True)] == [True] * 3
    assert cli("logs", config).stdout == log_text  # default: last 50 lines, fewer here
    assert cli("logs", config, "--tail", "0").stdout == ""
    assert remote_http_launcher.logs(config, tail=3) == proc.stdout

    code, document = cli_json("logs", config, "--tail", "3")
    assert code == 0 and document == {"key": KEY, "log": proc.stdout}
    mixed = cli("logs", config, "--json", "--follow")
    assert mixed.returncode == 2 and mixed.stdout == "" and "--follow" in mixed.stderr


def test_logs_without_a_log_is_not_running(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    proc = cli("logs", config_file())
    assert proc.returncode == 3 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "start it with 'remote-http-launcher CONFIG'" in proc.stderr


def test_logs_follow_ends_with_the_service(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    port = run(config)["port"]
    follower = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", "logs", str(config), "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stdout is not None
    stdout = follower.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def seen(text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in lines.get(timeout=0.1):
                    return
            except queue.Empty:
                pass
        raise AssertionError(f"{text!r} not followed")

    try:
        seen("listening on")  # the initial tail
        http_get(port, "/?followed=1")
        seen("GET /?followed=1 ")
        assert follower.poll() is None
        remote_http_launcher.stop(config)
        assert follower.wait(timeout=10) == 3  # the service is not running any more
        assert follower.stderr.read() == ""  # type: ignore[union-attr]
    finally:
        follower.kill()
        follower.wait()


def test_logs_follow_of_a_stopped_service_returns(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    run(config)
    remote_http_launcher.stop(config, keep_log=True)
    proc = cli("logs", config, "--follow", timeout=10)
    assert proc.returncode == 3 and "listening on" in proc.stdout and proc.stderr == ""


def test_logs_of_a_stale_service_print_the_log_and_exit_3(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    """The log of a crashed service is what one wants to read; the exit code says it is not running."""
    config = config_file()
    run(config)
    killpg(server_pid(rhl_dir), SIGKILL)
    wait_for(lambda: cli_json("status", config)[1]["status"] == "stale", what="the service to be stale")
    for args in ([], ["--follow"]):
        proc = cli("logs", config, *args, timeout=10)
        assert (proc.returncode, proc.stderr) == (3, ""), proc.stderr
        assert "listening on" in proc.stdout
    code, document = cli_json("logs", config)
    assert code == 3 and "listening on" in document["log"]


def test_logs_follow_ended_by_ctrl_c_exits_130(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    run(config)
    follower = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", "logs", str(config), "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None and "demo service starting" in follower.stdout.readline()  # the tail
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=10)
        assert (follower.returncode, err) == (130, "")  # ended as asked: the exit code says so, no error line
    finally:
        follower.kill()
        follower.wait()
    assert cli_json("status", config)[1]["status"] == "running"  # Ctrl-C ends the follow, not the service


@pytest.mark.parametrize("host", [LocalHost()], ids=["local"])
def test_read_tail_and_follow_file(tmp_path: Path, host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_command, "READ_CHUNK", 100)  # many chunks
    path = tmp_path / "big.log"
    lines = [f"line {n} " + "x" * (n % 37) for n in range(2000)]
    path.write_text("\n".join(lines) + "\n")
    for count in (0, 1, 7, 150, 1999, 2000, 5000):
        text, end = log_command.read_tail(host, str(path), count)  # type: ignore[misc]
        expected = "".join(line + "\n" for line in lines[len(lines) - min(count, len(lines)):])
        assert text.decode() == expected and end == path.stat().st_size
    path.write_text("no newline\nat end")
    assert log_command.read_tail(host, str(path), 1) == (b"at end", path.stat().st_size)
    assert log_command.read_tail(host, str(tmp_path / "missing"), 5) is None

    # Following: appended bytes arrive; a truncated file is read again from its start.
    path.write_text("a\n")
    rounds = iter([True, True, False])
    chunks = log_command.follow_file(host, str(path), 2, lambda: next(rounds), interval=0.01)
    with open(path, "a") as handle:
        handle.write("b\n")
    assert next(chunks) == b"b\n"
    path.write_text("c\n")
    assert next(chunks) == b"c\n"
    assert list(chunks) == []


# list ------------------------------------------------------------------------------

def test_list_marks_stale_entries(rhl_dir: Path, config_file: Callable[..., Path]) -> None:
    empty = cli("list")
    assert (empty.returncode, empty.stdout) == (0, "no services on localhost\n")
    assert cli_json("list")[1] == {"host": "localhost", "state_dir": str(rhl_dir / "server"), "services": []}

    port_a = run(config_file("a.yaml", key="demo-a"))["port"]
    port_b = run(config_file("b.yaml", key="demo-b"))["port"]
    kill9(server_pid(rhl_dir, "demo-b"))
    (rhl_dir / "server" / "broken.json").write_text("not json")
    (rhl_dir / "server" / ".demo-a.json.123.tmp").write_text("{}")

    code, listing = cli_json("list")
    assert code == 0
    services = {entry["key"]: entry for entry in listing["services"]}
    assert sorted(services) == ["broken", "demo-a", "demo-b"]
    assert (services["demo-a"]["status"], services["demo-a"]["port"]) == ("running", port_a)
    assert services["demo-a"]["pid"] == server_pid(rhl_dir, "demo-a") and services["demo-a"]["age"] < 60
    assert (services["demo-b"]["status"], services["demo-b"]["port"]) == ("stale", port_b)
    assert services["broken"]["status"] == "stale"

    human = cli("list").stdout.splitlines()
    assert human[0].split() == ["KEY", "STATUS", "PID", "PORT", "AGE"]
    rows = {line.split()[0]: line.split() for line in human[1:4]}
    assert rows["demo-a"][1:4] == ["running", str(services["demo-a"]["pid"]), str(port_a)]
    assert rows["demo-b"][1:3] == ["stale", "!"]
    assert human[4].startswith("2 stale (!)")


# help and errors -------------------------------------------------------------------

@pytest.mark.parametrize("command", ["status", "stop", "logs", "list"])
def test_help_has_an_example(command: str) -> None:
    proc = cli(command, "--help")
    assert proc.returncode == 0 and "example:" in proc.stdout and f"remote-http-launcher {command} " in proc.stdout
    if command != "list":
        assert "--connection-dir" in proc.stdout


def test_top_level_help_lists_subcommands() -> None:
    assert "status, stop, logs, list" in cli("--help").stdout


@pytest.mark.parametrize("args", [
    ("status", "missing.yaml"),
    ("stop", "missing.yaml"),
    ("logs", "missing.yaml"),
    ("logs", "CONFIG", "--tail", "-1"),
    ("stop", "CONFIG", "--timeout", "0"),
    ("list", "--host", "-oProxyCommand=touch /tmp/x"),
    ("list", "extra"),
])
def test_usage_and_config_errors_exit_2(rhl_dir: Path, config_file: Callable[..., Path],
                                        args: tuple[str, ...]) -> None:
    args = tuple(str(config_file()) if arg == "CONFIG" else arg for arg in args)
    proc = cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")


def test_api_is_exported() -> None:
    assert {"status", "stop", "logs"} <= set(remote_http_launcher.__all__)


# Over SSH: the same commands against a real sshd ---------------------------------------

@pytest.fixture
def ssh_support() -> None:
    """Skip (before starting sshd) while the SSH host is not available."""
    pytest.importorskip("remote_http_launcher.hosts.ssh", reason="hosts/ssh.py is not written yet")


@pytest.fixture
def ssh_service(ssh_support: None, sshd: Any, remote_demo: str, client_home: Path, rhl_dir: Path, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[Callable[..., Path]]:
    """A factory of SSH configs for the demo service on `sshd` (alias `testhost` in ~/.ssh/config)."""
    sshd.write_ssh_config(client_home, ALIAS)
    keys: list[str] = []

    def make(*, args: str = "", **fields: Any) -> Path:
        key = f"lc-{request.node.name[5:40].replace('[', '-').replace(']', '')}-{len(keys)}"
        keys.append(key)
        # remote_demo, as the command names it: ~/demo_service.py
        config = demo_config(sshd, "~/demo_service.py", key, args=args, **{"workdir": "~/lifecycle work", **fields})
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    yield make
    for key in keys:  # anything a failed test left running on the server
        sshd.run(f'pid=$(sed -n \'s/.*"pid": *\\([0-9]*\\).*/\\1/p\' ~/.remote-http-launcher/server/{key}.json '
                 f'2>/dev/null); [ -n "$pid" ] && kill -s KILL -- "-$pid"; '
                 f'rm -f ~/.remote-http-launcher/server/{key}.*')


def remote_state(sshd: Any, key: str) -> dict[str, Any] | None:
    path = sshd.home / ".remote-http-launcher" / "server" / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def remote_alive(sshd: Any, pid: int) -> bool:
    return bool(sshd.run(f"[ -d /proc/{pid} ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/{pid}/stat").returncode == 0)


def test_ssh_status_logs_list_stop(sshd: Any, ssh_service: Callable[..., Path], rhl_dir: Path) -> None:
    config = ssh_service()
    key = yaml.safe_load(config.read_text())["key"]
    code, entry = cli_json("status", config)
    assert (code, entry["status"], entry["host"]) == (3, "absent", "testhost")

    payload = run(config)
    code, entry = cli_json("status", config)
    assert (code, entry["status"], entry["port"]) == (0, "running", payload["port"])
    assert entry["pid"] == remote_state(sshd, key)["pid"]  # type: ignore[index]
    assert entry["workdir"] == str(sshd.home / "lifecycle work")
    assert entry["log"] == str(sshd.home / ".remote-http-launcher" / "server" / f"{key}.log")
    assert entry["client"]["present"] is True

    logs = cli("logs", config, "--tail", "1")
    assert logs.returncode == 0 and logs.stdout.count("\n") == 1 and "GET /healthcheck" in logs.stdout
    assert "listening on" in remote_http_launcher.logs(config)

    code, listing = cli_json("list", "--host", "testhost")
    assert code == 0 and listing["host"] == "testhost"
    assert {e["key"]: e["status"] for e in listing["services"]}[key] == "running"

    killed = sshd.run(f"kill -s KILL -- -{entry['pid']}")
    assert killed.returncode == 0, killed.stderr
    wait_for(lambda: not remote_alive(sshd, entry["pid"]), what="the remote service to die")
    code, entry = cli_json("status", config)
    assert (code, entry["status"]) == (3, "stale")
    listing = cli_json("list", "--host", "testhost")[1]
    assert {e["key"]: e["status"] for e in listing["services"]}[key] == "stale"
    assert "stale !" in cli("list", "--host", "testhost").stdout

    stopped = cli("stop", config, "--keep-log")
    assert (stopped.returncode, stopped.stdout.split(" (")[0].strip()) == (0, "not running; nothing to stop")
    assert remote_state(sshd, key) is None and not client_path(rhl_dir, key).exists()
    assert (sshd.home / ".remote-http-launcher" / "server" / f"{key}.log").exists()
    assert cli_json("status", config)[1]["status"] == "absent"


def test_ssh_stop_escalates_and_follow_ends(sshd: Any, ssh_service: Callable[..., Path]) -> None:
    config = ssh_service(args="--ignore-sigterm")
    port = run(config)["port"]
    key = yaml.safe_load(config.read_text())["key"]
    leader = remote_state(sshd, key)["pid"]  # type: ignore[index]
    follower = subprocess.Popen([sys.executable, "-m", "remote_http_launcher", "logs", str(config), "-f"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        with urllib.request.urlopen(f"http://{sshd.host}:{port}/?over=ssh", timeout=5) as response:
            service_pid = json.loads(response.read())["pid"]
        code, result = cli_json("stop", config, "--timeout", "0.5")
        assert code == 0 and result["processes"] == [{"pid": leader, "signal": "KILL"}]
        assert not remote_alive(sshd, leader) and not remote_alive(sshd, service_pid)
        out, err = follower.communicate(timeout=15)
        assert follower.returncode == 3, err  # the follow ended with the service
        assert "GET /?over=ssh " in out
    finally:
        follower.kill()
        follower.wait()
    again = cli("stop", config)
    assert (again.returncode, again.stdout) == (0, "not running; nothing to stop\n")
