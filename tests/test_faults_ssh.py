"""SSH mode under faults, against a real sshd (tests/sshd.py) and the real demo service.

Every test asserts what happened on the server (processes, state files) and
then checks the aftermath: the next run succeeds, or says precisely why it
cannot, and no service process, lock, temp or `.broken` file is left over.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import LaunchError, run, status, stop
from tests.conftest import ROOT, alive
from tests.ssh_client import ALIAS, REMOTE_STATE, demo_config, node_key, remote_state
from tests.test_orphans import REWRITER

if TYPE_CHECKING:
    from tests.sshd import SSHServer

Factory = Callable[..., dict[str, Any]]

# Prints "pid session cmdline" for each live (non-zombie) process of the user.
FIND_PROCESSES = r"""
# rhl-find-processes (this marker keeps the script from finding itself)
for d in /proc/[0-9]*; do
  [ -O "$d" ] || continue
  cmd=$(tr '\0\n' '  ' < "$d/cmdline" 2>/dev/null) || continue  # one line: a shell's program has several
  case $cmd in *rhl-find-processes*) continue ;; esac
  read -r line < "$d/stat" 2>/dev/null || continue
  rest=${line##*) }
  set -f; set -- $rest; set +f
  [ "$1" = Z ] || printf '%s %s %s\n' "${d#/proc/}" "$4" "$cmd"  # not echo: it would expand the program's \n
done
"""

# Kills every process of the test user that a test's services may have left
# (found by the demo service's path, the workdir or `sleep`), by PID, then wipes the state.
CLEANUP = r"""
# rhl-cleanup (this marker keeps the script from killing itself)
for d in /proc/[0-9]*; do
  [ -O "$d" ] || continue
  p=${d#/proc/}
  cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) || continue
  case $cmd in
    *rhl-cleanup*) ;;
    *demo_service*|*rhl-service*|*"sleep 30"*|*rhl-fault*) kill -s KILL "$p" 2>/dev/null ;;
  esac
done
rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work" "$HOME/rhl-fault-blocker" "$HOME"/rhl-pwned-*
exit 0
"""


# ---------------------------------------------------------------- fixtures (client HOME: conftest.py)

@pytest.fixture
def server(sshd: SSHServer) -> Iterator[SSHServer]:
    """The target server, with its link up and sshd running; cleaned after the test."""
    sshd.run(CLEANUP)
    yield sshd
    if sshd.netns:
        restore_link(sshd)
    sshd.start()
    sshd.run(CLEANUP)


@pytest.fixture
def make_config(server: SSHServer, remote_demo: str, request: pytest.FixtureRequest) -> Factory:
    """Demo-service configs for the SSH server (direct mode); keyword arguments override fields."""
    return partial(demo_config, server, remote_demo, node_key("f-", request.node.name))


# ---------------------------------------------------------------- helpers

def status_path(server: SSHServer, key: str) -> str:
    return f"{server.home}/{REMOTE_STATE}/{key}.json"


def remote_record(server: SSHServer, key: str) -> dict[str, Any]:
    """The key's status file on the server, which must exist."""
    state = remote_state(server, key)
    assert state is not None, f"no status file for {key}"
    return state


def remote_write(server: SSHServer, relative: str, data: bytes) -> None:
    """Write a file in the test user's home (as that user), making its directory."""
    import base64

    encoded = base64.b64encode(data).decode()
    server.run(f"mkdir -p \"$(dirname {shlex.quote(relative)})\" && "
               f"printf %s {encoded} | base64 -d > {shlex.quote(relative)}", check=True)


def remote_files(server: SSHServer) -> list[str]:
    return sorted(server.run(f"ls -A {REMOTE_STATE} 2>/dev/null").stdout.split())


def user_processes(server: SSHServer) -> list[tuple[int, int, str]]:
    """(pid, session, command line) of the test user's live processes on the server."""
    out = server.run(FIND_PROCESSES).stdout
    return [(int(pid), int(sid), cmd) for pid, sid, cmd in (line.split(" ", 2) for line in out.splitlines())]


def service_processes(server: SSHServer, key: str) -> dict[int, int]:
    """{pid: session} of the live processes whose command line names the key's status file."""
    path = status_path(server, key)
    return {pid: sid for pid, sid, cmd in user_processes(server) if path in cmd}


def session_members(server: SSHServer, session: int) -> list[str]:
    """Command lines of the live processes in a session (a service and its children)."""
    return [cmd for _, sid, cmd in user_processes(server) if sid == session]


def service_sessions(server: SSHServer, key: str) -> set[int]:
    """Sessions (one per launched service) with a live process naming the key's status file."""
    return set(service_processes(server, key).values())


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def no_service_left(server: SSHServer, key: str) -> None:
    """No process of the key's service survives (the launcher stops what it gave up on)."""
    wait_for(lambda: not service_processes(server, key), 10, f"no process of {key} on the server")


def assert_clean_state(server: SSHServer, key: str, *, running: bool) -> None:
    """Only the status file and log remain (no lock, temp or .broken file), and one service when running."""
    files = remote_files(server)
    expected = [f"{key}.json", f"{key}.log"] if running else [f for f in (f"{key}.json", f"{key}.log") if f in files]
    assert files == expected, files
    sessions = service_sessions(server, key)
    if running:
        state = remote_state(server, key)
        assert state is not None and state["status"] == "running"
        assert len(sessions) == 1, service_processes(server, key)
        assert state["pid"] in sessions  # the service leads its own session
    else:
        assert not sessions, service_processes(server, key)


def restore_link(server: SSHServer) -> None:
    """Bring the link back and wait until sshd is reachable again (the neighbour entry may need a moment)."""
    import socket

    server.set_link(True)

    def reachable() -> bool:
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    wait_for(reachable, 15, "the restored link")


def healthy(host: str, port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthcheck", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def client_path(rhl_dir: Path, key: str) -> Path:
    return rhl_dir / "client" / f"{key}.json"


def write_yaml(config: dict[str, Any], tmp_path: Path, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def cli_command(config_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "remote_http_launcher", str(config_path), *args]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(config: dict[str, Any], tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(write_yaml(config, tmp_path), *args), env=cli_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error: exactly one line, the last on stderr, and no traceback."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    return message


# ---------------------------------------------------------------- exactly once

def test_twenty_simultaneous_runs_start_one_service(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                    make_config: Factory, tmp_path: Path) -> None:
    config = make_config(args="--ready-delay 1")
    path = write_yaml(config, tmp_path)
    procs = [subprocess.Popen(cli_command(path, "--json"), env=cli_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(20)]
    results = [(proc.wait(timeout=120), *proc.communicate()) for proc in procs]
    failures = [err for code, _, err in results if code != 0]
    assert not failures, failures[0]
    ports = {json.loads(out)["port"] for _, out, _ in results}
    state = remote_state(server, config["key"])
    assert state is not None and ports == {state["port"]}
    assert healthy(server.host, state["port"])
    assert_clean_state(server, config["key"], running=True)
    log = server.run(f"cat {REMOTE_STATE}/{config['key']}.log").stdout
    assert log.count("demo service starting") == 1, log
    assert f"status file {status_path(server, config['key'])}" in log
    assert run(config)["port"] == state["port"]  # and the next run reuses it


# ---------------------------------------------------------------- the link goes away mid-launch

@pytest.mark.parametrize("how", ["link-cut", "link-cut-server-alive", "sshd-stopped"])
def test_connection_lost_while_waiting_for_the_service(how: str, server: SSHServer, client_home: Path,
                                                       rhl_dir: Path, make_config: Factory,
                                                       tmp_path: Path) -> None:
    """The launcher gives up in bounded time with one line; the service it started is reused next time."""
    if how.startswith("link-cut") and server.netns is None:
        pytest.skip("needs the network namespace to drop packets")
    alive = {"ServerAliveInterval": "1"} if how == "link-cut-server-alive" else {}  # ssh's limit: 1 s x 3
    server.write_ssh_config(client_home, ALIAS, alive)
    limit = 3 if alive else 15  # DEFAULT_REPLY_TIMEOUT
    config = make_config(args="--ready-delay 3")
    key = config["key"]
    proc = subprocess.Popen(cli_command(write_yaml(config, tmp_path)), env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def launched() -> bool:  # the service runs, has its record, and the launch lock is gone
        state = remote_state(server, key)
        return state is not None and state.get("pid") in service_sessions(server, key) \
            and f"{key}.lock" not in remote_files(server)

    wait_for(launched, 15, "the launch")
    cut = time.monotonic()
    if how == "sshd-stopped":
        server.stop()
    else:
        server.set_link(False)
    try:
        out, err = proc.communicate(timeout=limit + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the launcher hung after the connection was lost: {err}")
    finally:
        if how == "sshd-stopped":
            server.start()
        else:
            restore_link(server)
    elapsed = time.monotonic() - cut
    assert proc.returncode == 1 and out == ""
    line = error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    # the launch script's exec (it waits for the service's record) or a poll of the status file after it
    assert re.fullmatch(rf"error: ssh {ALIAS} \({re.escape(server.host)}:{server.port}\): "
                        r"(exec|SFTP: (read|stat) \S+): connection lost.*", line), line
    if how == "sshd-stopped":
        assert elapsed < 5
    else:
        assert f"(no answer within {limit} s)" in line
        assert limit - 1 <= elapsed < limit + 5  # the step that noticed may have begun just before the cut
    # one session: the service's, once the launch script (which waits up to a second for the service's record)
    # ends, at its next write to a closed channel or at the end of its wait
    wait_for(lambda: len(service_sessions(server, key)) == 1, 5, "one session: the service's")
    first = service_sessions(server, key)
    assert not client_path(rhl_dir, key).exists()

    payload = run(config)
    assert service_sessions(server, key) == first  # reused, not launched again
    state = remote_state(server, key)
    assert state is not None and payload["port"] == state["port"] and healthy(server.host, state["port"])
    assert_clean_state(server, key, running=True)


def test_server_down_is_one_line_and_leaves_nothing(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                    make_config: Factory, tmp_path: Path) -> None:
    config = make_config()
    server.stop()
    try:
        result = cli(config, tmp_path)
    finally:
        server.start()
    assert result.returncode == 1 and result.stdout == ""
    assert error_line(result) == f"error: ssh {ALIAS} ({server.host}:{server.port}): connect: connection refused"
    assert remote_files(server) == [] and not client_path(rhl_dir, config["key"]).exists()
    assert cli(config, tmp_path).returncode == 0
    assert_clean_state(server, config["key"], running=True)


# ---------------------------------------------------------------- services that die or never start

def test_crashed_service_is_relaunched(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                       make_config: Factory) -> None:
    config = make_config()
    key = config["key"]
    first = run(config)
    old = remote_state(server, key)
    assert old is not None
    server.run(f"kill -s KILL -- -{old['pid']}", check=True)
    wait_for(lambda: not service_sessions(server, key), 5, "the crash")

    second = run(config)  # the client file's port no longer answers: back to the server
    new = remote_state(server, key)
    assert new is not None and new["pid"] != old["pid"] and second["port"] == new["port"]
    assert healthy(server.host, second["port"]) and not healthy(server.host, first["port"])
    assert_clean_state(server, key, running=True)


def test_service_reporting_failed_then_fixed(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                             make_config: Factory) -> None:
    config = make_config(args="--fail")
    key = config["key"]
    with pytest.raises(LaunchError) as caught:
        run(config)
    assert re.fullmatch(rf"{key}: service on {ALIAS} reported status 'failed'; last 2 lines of its log:\n"
                        rf"  demo service starting, pid \d+, status file {re.escape(status_path(server, key))}\n"
                        "  demo service: failing on purpose", str(caught.value))
    assert remote_record(server, key)["status"] == "failed"
    no_service_left(server, key)
    assert_clean_state(server, key, running=False)
    assert not client_path(rhl_dir, key).exists()

    payload = run(make_config())  # the config fixed
    assert healthy(server.host, payload["port"])
    assert_clean_state(server, key, running=True)


def test_silent_service_is_stopped_after_the_startup_timeout(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                             make_config: Factory) -> None:
    config = make_config(command="echo going quiet; sleep 30", startup_timeout=2)
    key = config["key"]
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        run(config)
    elapsed = time.monotonic() - started
    assert one_line(caught.value) == (f"{key}: service on {ALIAS} did not report its port within 2 s "
                                      "(stopped it); log: going quiet")
    assert 2 <= elapsed < 6
    state = remote_state(server, key)
    assert state is not None and state["status"] == "starting"
    wait_for(lambda: not session_members(server, state["pid"]), 5, "the service's session to end")  # `sleep` too
    assert_clean_state(server, key, running=False)

    payload = run(make_config())
    assert healthy(server.host, payload["port"])
    assert_clean_state(server, key, running=True)


def test_command_false_fails_fast_with_the_log(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                               make_config: Factory, tmp_path: Path) -> None:
    config = make_config(command="false")
    key = config["key"]
    started = time.monotonic()
    with pytest.raises(LaunchError):
        run(config)
    assert time.monotonic() - started < 2.5  # login included; not the 60 s startup timeout
    result = cli(config, tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert error_line(result) == f"error: {key}: service on {ALIAS} exited before reporting its port; " \
                                 "log: (log is empty); see the whole log with " \
                                 f"'remote-http-launcher logs {tmp_path / 'config.yaml'}'"
    assert_clean_state(server, key, running=False)
    assert cli(make_config(), tmp_path).returncode == 0
    assert_clean_state(server, key, running=True)


# ---------------------------------------------------------------- the host refuses a step

@pytest.mark.parametrize("where", ["under-a-file", "in-proc"])
def test_workdir_that_cannot_be_created(where: str, ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                        make_config: Factory, tmp_path: Path) -> None:
    if where == "under-a-file":
        server.run("echo not a directory > rhl-fault-blocker", check=True)
        workdir = f"{server.home}/rhl-fault-blocker/sub"
    else:
        workdir = "/proc/rhl-fault/x"
    config = make_config(workdir=workdir)
    key = config["key"]
    result = cli(config, tmp_path)
    assert result.returncode == 1
    reason = {"under-a-file": f"'{server.home}/rhl-fault-blocker': Not a directory",
              "in-proc": "'/proc/rhl-fault': No such file or directory"}[where]  # mkdir's words, as the OS said
    line = error_line(result)
    assert line.startswith(f"error: {key}: workdir on {ALIAS}: cannot create workdir {workdir} (cannot create "
                           "directory "), line
    assert line.replace("‘", "'").replace("’", "'").endswith(f"{reason})"), line
    assert remote_files(server) == [] and not service_sessions(server, key)
    assert cli(make_config(), tmp_path).returncode == 0
    assert_clean_state(server, key, running=True)


def test_log_that_cannot_be_written(ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Factory,
                                    tmp_path: Path) -> None:
    config = make_config()
    key = config["key"]
    log = f"{REMOTE_STATE}/{key}.log"
    server.run(f"mkdir -p {REMOTE_STATE} && echo old > {log} && chmod 400 {log}", check=True)
    result = cli(config, tmp_path)
    assert result.returncode == 1
    assert error_line(result) == f"error: {key}: log file on {ALIAS}: cannot write log file {server.home}/{log}"
    assert remote_files(server) == [f"{key}.log"] and not service_sessions(server, key)
    server.run(f"chmod 600 {log}", check=True)
    assert cli(config, tmp_path).returncode == 0
    assert_clean_state(server, key, running=True)


# ---------------------------------------------------------------- a launcher killed mid-launch

@pytest.mark.parametrize("lock_left", [False, True])
def test_launcher_killed_mid_launch(lock_left: bool, ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                    make_config: Factory, tmp_path: Path) -> None:
    """kill -9 while the service starts; with `lock_left`, as if it died before releasing the launch lock."""
    import socket

    config = make_config(args="--ready-delay 2")
    key = config["key"]
    proc = subprocess.Popen(cli_command(write_yaml(config, tmp_path)), env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (remote_state(server, key) or {}).get("status") == "starting"
             and f"{key}.lock" not in remote_files(server), 15, "the launch")
    proc.kill()
    proc.wait()
    # one session: the service's, once the launch script (which waits up to a second for the service's record)
    # ends at its next write to the closed channel
    wait_for(lambda: len(service_sessions(server, key)) == 1, 5, "one session: the service's")
    if lock_left:
        lock = {"owner": socket.gethostname(), "pid": proc.pid, "time": time.time(), "token": "killed"}
        remote_write(server, f"{REMOTE_STATE}/{key}.lock", json.dumps(lock).encode())
    first = service_sessions(server, key)
    assert len(first) == 1

    payload = run(config)  # waits for the starting service instead of launching another
    assert service_sessions(server, key) == first
    assert healthy(server.host, payload["port"])
    assert_clean_state(server, key, running=True)  # the dead launcher's lock is gone too


def dead_local_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("kind", ["dead-owner-here", "old-owner-elsewhere", "garbage-old"])
def test_stale_remote_lock_is_broken(kind: str, ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                     make_config: Factory) -> None:
    import socket

    config = make_config(startup_timeout=5)
    key = config["key"]
    content = {
        "dead-owner-here": {"owner": socket.gethostname(), "pid": dead_local_pid(), "time": time.time(), "token": "t"},
        "old-owner-elsewhere": {"owner": "elsewhere.invalid", "pid": 1, "time": time.time() - 16, "token": "t"},
    }.get(kind)
    remote_write(server, f"{REMOTE_STATE}/{key}.lock", json.dumps(content).encode() if content else b"{half")
    if kind == "garbage-old":
        server.run(f"touch -d @{int(time.time()) - 3600} {REMOTE_STATE}/{key}.lock", check=True)
    started = time.monotonic()
    payload = run(config)
    assert time.monotonic() - started < 5
    assert healthy(server.host, payload["port"])
    assert_clean_state(server, key, running=True)  # no lock, no *.broken


def test_fresh_remote_lock_is_respected_until_stale(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                    make_config: Factory) -> None:
    """Another machine's lock (nothing starting) is waited for until it is older than the startup timeout
    plus LOCK_GRACE (10 s), then broken: here it has 2 s left to live."""
    config = make_config(startup_timeout=1)
    key = config["key"]
    lock = {"owner": "elsewhere.invalid", "pid": 1, "time": time.time() - 9, "token": "t"}
    remote_write(server, f"{REMOTE_STATE}/{key}.lock", json.dumps(lock).encode())
    started = time.monotonic()
    payload = run(config)
    assert 1.5 < time.monotonic() - started < 6
    assert healthy(server.host, payload["port"])
    assert_clean_state(server, key, running=True)


# ---------------------------------------------------------------- corrupt status files

def corrupt_records(dead: int) -> dict[str, bytes]:
    record = {"workdir": "/nowhere", "log": "/nowhere.log", "command": "x", "network_interface": "0.0.0.0",
              "status": "running", "pid": dead, "port": 1234, "start_time": "proc:1"}
    valid = json.dumps(record).encode()
    return {
        "empty": b"",
        "truncated": valid[: len(valid) // 2],
        "not-json": b"status: running\x00\xff",
        "list": b"[1, 2]",
        "port-string": json.dumps({**record, "port": "1234"}).encode(),
        "port-70000": json.dumps({**record, "port": 70000}).encode(),
        "pid-string": json.dumps({**record, "pid": str(dead)}).encode(),
    }


@pytest.mark.parametrize("variant", ["empty", "truncated", "not-json", "list", "port-string", "port-70000",
                                     "pid-string"])
def test_corrupt_status_file_is_stale(variant: str, ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                      make_config: Factory, tmp_path: Path) -> None:
    config = make_config()
    key = config["key"]
    dead = int(server.run("sh -c 'echo $$'").stdout)
    remote_write(server, f"{REMOTE_STATE}/{key}.json", corrupt_records(dead)[variant])
    result = cli(config, tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr
    state = remote_state(server, key)
    assert state is not None and state["pid"] != dead and json.loads(result.stdout)["port"] == state["port"]
    assert_clean_state(server, key, running=True)


# ---------------------------------------------------------------- orphans and wrong targets

def test_service_outliving_its_killed_wrapper_is_running_reused_and_stopped(
        ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Factory, remote_demo: str) -> None:
    """A compound command runs under `sh -c`; with that wrapper killed, its service is not stale (group_alive.sh
    over SSH): `status` says running, a run reuses it, and `stop` ends it."""
    config = make_config(command=f"cd ~ && {server.python} {remote_demo} --status-file {{status_file}} "
                                 "--host {network_interface}")
    key = config["key"]
    first = run(config)
    leader = remote_record(server, key)["pid"]
    (service,) = [pid for pid in service_processes(server, key) if pid != leader]
    server.run(f"kill -s KILL {leader}", check=True)
    wait_for(lambda: leader not in service_processes(server, key), 5, "the wrapper's end")

    entry = status(config)
    assert (entry["status"], entry["pid"], entry["detail"]) == ("running", leader, None)
    client_path(rhl_dir, key).unlink()  # another machine's view: the run goes to the status file
    assert run(config)["port"] == first["port"]
    assert service_processes(server, key) == {service: leader}  # no second copy

    assert stop(config)["processes"] == [{"pid": leader, "signal": "TERM"}]
    no_service_left(server, key)
    assert not healthy(server.host, first["port"])


def half_written(server: SSHServer, key: str) -> bool:
    try:
        json.loads(server.run(f"cat {REMOTE_STATE}/{key}.json").stdout)
    except ValueError:
        return True
    return False


def test_service_rewriting_its_status_file_in_place_is_never_doubled(ssh_config: Path, server: SSHServer,
                                                                    rhl_dir: Path, make_config: Factory) -> None:
    """Half a status file for longer than the re-reads: the service's processes still run (key_processes.sh
    over SSH), so the run waits for their record instead of launching; `stop` finds them the same way."""
    remote_write(server, "rhl-work/rhl-fault-rewriter.py", REWRITER.encode())
    config = make_config(command=f"{server.python} rhl-fault-rewriter.py {{status_file}} 1.5 0.3 0.0.0.0")
    key = config["key"]
    first = run(config)
    pid = remote_record(server, key)["pid"]
    for _ in range(2):
        client_path(rhl_dir, key).unlink()
        wait_for(lambda: half_written(server, key), 5, "half a status file")
        assert run(config)["port"] == first["port"]
        assert list(service_processes(server, key)) == [pid]
    assert server.run(f"cat {REMOTE_STATE}/{key}.log").stdout == "rewriter serving\n"  # never relaunched

    wait_for(lambda: half_written(server, key), 5, "half a status file")
    assert stop(config)["processes"] == [{"pid": pid, "signal": "TERM"}]
    no_service_left(server, key)


def test_legacy_record_whose_pid_runs_another_program_is_never_signalled(ssh_config: Path, server: SSHServer,
                                                                        rhl_dir: Path, make_config: Factory) -> None:
    """A status file of the original 0.2.0 (no start time) whose PID now runs another program of the same
    user: process_origin.sh over SSH tells, and nothing is signalled."""
    config = make_config()
    key = config["key"]
    bystander = int(server.run("setsid sleep 30 >/dev/null 2>&1 </dev/null & echo $!", check=True).stdout)
    record = {"workdir": "~/rhl-work", "log": f"{status_path(server, key)[:-5]}.log", "command": config["command"],
              "uid": int(server.run("id -u").stdout), "pid": bystander, "status": "running", "port": 1,
              "network_interface": "0.0.0.0"}
    remote_write(server, f"{REMOTE_STATE}/{key}.json", json.dumps(record).encode())
    server.run(f"touch -d @{int(time.time()) - 3600} {REMOTE_STATE}/{key}.json", check=True)

    entry = status(config)
    assert entry["status"] == "stale" and entry["detail"] == (
        f"PID {bystander} now belongs to another process (it does not run the recorded command)")
    outcome = stop(config)
    assert outcome["processes"] == [] and outcome["refused"] == entry["detail"] and alive(bystander)

    remote_write(server, f"{REMOTE_STATE}/{key}.json", json.dumps({**record, "command": "sleep 30"}).encode())
    server.run(f"touch -d @{int(time.time()) - 3600} {REMOTE_STATE}/{key}.json", check=True)
    assert status(config)["detail"] == (f"PID {bystander} now belongs to another process (it started after the "
                                        "status file was written)")
    payload = run(config)  # launched anew, the bystander left alone
    assert remote_record(server, key)["pid"] != bystander and healthy(server.host, payload["port"])
    assert alive(bystander)


def test_stop_removes_the_service_log_and_the_keeper_log_unless_asked_to_keep_them(
        ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Factory) -> None:
    config = make_config(network_interface="localhost", tunnel=True, connection_persist=0)  # a keeper process
    key = config["key"]
    keeper_log = rhl_dir / "client" / f"{key}.keeper.log"
    run(config)
    assert keeper_log.exists() and remote_files(server) == [f"{key}.json", f"{key}.log"]
    kept = stop(config, keep_log=True)
    assert keeper_log.exists() and remote_files(server) == [f"{key}.log"] and kept["logs_removed"] == []

    run(config)
    outcome = stop(config)
    assert outcome["logs_removed"] == [f"{status_path(server, key)[:-5]}.log", str(keeper_log)]
    assert remote_files(server) == [] and not keeper_log.exists()


@pytest.mark.parametrize("variant", ["truncated", "port-string"])
def test_corrupt_status_file_of_a_running_service_leaves_one_copy(variant: str, ssh_config: Path,
                                                                  server: SSHServer, rhl_dir: Path,
                                                                  make_config: Factory) -> None:
    """The record of a running service is lost for good: the launch that follows first stops that service
    (found by its environment over SSH), so one copy runs afterwards, not two."""
    config = make_config()
    key = config["key"]
    run(config)
    old = remote_record(server, key)
    remote_write(server, f"{REMOTE_STATE}/{key}.json", corrupt_records(old["pid"])[variant])
    client_path(rhl_dir, key).unlink()

    payload = run(config)

    assert remote_record(server, key)["pid"] != old["pid"] and healthy(server.host, payload["port"])
    assert_clean_state(server, key, running=True)
