"""Issue 16, items 1-3 and 12 on this machine: orphans, wrong targets and leftover logs.

Real processes throughout: a compound command whose `sh` wrapper is killed,
a service that rewrites its status file in place (garbage for a moment), a
record of the original 0.2.0 (no start time) whose PID now runs another
program of the same user, and the logs a stopped key leaves. The same cases
over the real sshd are in tests/test_faults_ssh.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remote_http_launcher import run, status, stop
from tests.conftest import DEMO_SERVICE, alive
from tests.posix import SIGKILL, getuid
from tests.test_faults_local import group_members

KEY = "demo-localhost"
Factory = Callable[..., dict[str, Any]]

# A service that serves /healthcheck and rewrites its status file in place (no temp file and
# rename) forever: GARBAGE seconds of half a file, then VALID seconds of its whole record.
# Arguments: STATUS_FILE GARBAGE VALID HOST.
# Until its own record is in the file (the launcher's prelude writes it) it waits.
REWRITER = r"""
import http.server, json, os, sys, threading, time
path, garbage, valid, host = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
while True:
    try:
        with open(path) as handle:
            record = json.load(handle)
        if record.get("pid") == os.getpid():
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.01)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *args):
        pass

server = http.server.HTTPServer((host, 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
record.update(status="running", port=server.server_address[1])
text = json.dumps(record)
print("rewriter serving", flush=True)
while True:
    with open(path, "w") as handle:
        handle.write(text[: len(text) // 2])
    time.sleep(garbage)
    with open(path, "w") as handle:
        handle.write(text)
    time.sleep(valid)
"""


def status_file(rhl_dir: Path) -> Path:
    return rhl_dir / "server" / f"{KEY}.json"


def record_of(rhl_dir: Path) -> dict[str, Any]:
    """The status file, read until it parses (a rewriter may be halfway)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            record: dict[str, Any] = json.loads(status_file(rhl_dir).read_text())
            return record
        except ValueError:
            assert time.monotonic() < deadline, "the status file never parsed"
            time.sleep(0.01)


def half_written(rhl_dir: Path) -> bool:
    """The status file is caught halfway through a rewrite (so is the next read, for a moment)."""
    try:
        json.loads(status_file(rhl_dir).read_text())
    except ValueError:
        return True
    return False


def processes_running(marker: str) -> list[int]:
    """Live processes of ours whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def forget_client(rhl_dir: Path) -> None:
    """Another machine's view: no client file, so the run goes to the server status file."""
    (rhl_dir / "client" / f"{KEY}.json").unlink(missing_ok=True)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated program of the same user (the one a reused PID now belongs to)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# ---------------------------------------------------------------- 1. a compound command's killed wrapper

def test_service_outliving_its_killed_wrapper_is_running_reused_and_stopped(rhl_dir: Path, demo_config: Factory,
                                                                            tmp_path: Path) -> None:
    config = demo_config(command=f"cd {tmp_path} && {sys.executable} {DEMO_SERVICE} --status-file {{status_file}}")
    payload = run(config)
    leader = record_of(rhl_dir)["pid"]
    (service,) = [p for p in group_members(leader) if p != leader]
    os.kill(leader, SIGKILL)  # the `sh -c` wrapper; the service it runs goes on
    wait_until(lambda: not alive(leader), "the wrapper's end")
    assert alive(service)

    entry = status(config)
    assert (entry["status"], entry["pid"], entry["detail"]) == ("running", leader, None)
    forget_client(rhl_dir)
    again = run(config)
    assert again["port"] == payload["port"]  # reused: no second copy
    assert record_of(rhl_dir)["pid"] == leader and group_members(leader) == [service]
    assert processes_running(str(status_file(rhl_dir))) == [service]

    outcome = stop(config)
    assert outcome["processes"] == [{"pid": leader, "signal": "TERM"}]
    wait_until(lambda: not alive(service), "the service's end")
    assert group_members(leader) == [] and not status_file(rhl_dir).exists()


# ---------------------------------------------------------------- 2. a status file rewritten in place

@pytest.mark.parametrize(("garbage", "valid"), [(0.3, 0.1), (1.5, 0.3)], ids=["briefly", "longer-than-a-reread"])
def test_service_rewriting_its_status_file_in_place_is_never_doubled(rhl_dir: Path, demo_config: Factory,
                                                                    tmp_path: Path, garbage: float,
                                                                    valid: float) -> None:
    """Half a file for a moment is re-read, not taken for stale; when it lasts longer than the re-reads,
    the service's processes (found by their environment) are still running, so the run waits for their
    record instead of launching a copy. One process, one port, an intact log, and `stop` reaches it."""
    script = tmp_path / "rewriter.py"
    script.write_text(REWRITER)
    config = demo_config(command=f"{sys.executable} {script} {{status_file}} {garbage} {valid} localhost")
    first = run(config)
    pid = record_of(rhl_dir)["pid"]
    for _ in range(3):
        forget_client(rhl_dir)
        wait_until(lambda: half_written(rhl_dir), "half a status file")
        assert run(config)["port"] == first["port"]
        assert processes_running(str(script)) == [pid]
    # no launch at all: one would have truncated the service's log
    assert (rhl_dir / "server" / f"{KEY}.log").read_text() == "rewriter serving\n"

    wait_until(lambda: half_written(rhl_dir), "half a status file")
    outcome = stop(config)
    assert outcome["processes"] == [{"pid": pid, "signal": "TERM"}]
    assert processes_running(str(script)) == []


# ---------------------------------------------------------------- 3. the original 0.2.0's records

def write_legacy_record(rhl_dir: Path, config: dict[str, Any], pid: int, command: str, age: float) -> None:
    """A status file as the original 0.2.0 wrote it (no start time, no key or token), `age` seconds old."""
    path = status_file(rhl_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({"workdir": config["workdir"], "log": str(path.with_suffix(".log")),
                                "command": command, "uid": getuid(), "pid": pid, "status": "running",
                                "port": 1, "network_interface": "localhost"}))
    os.utime(path, (time.time() - age, time.time() - age))


@pytest.mark.parametrize("case", ["other command", "started after the file"])
def test_legacy_record_whose_pid_runs_another_program_is_never_signalled(
        rhl_dir: Path, demo_config: Factory, bystander: subprocess.Popen[bytes], case: str) -> None:
    config = demo_config()
    command = config["command"] if case == "other command" else "sleep 60"
    write_legacy_record(rhl_dir, config, bystander.pid, command, age=3600)

    entry = status(config)
    assert entry["status"] == "stale" and entry["pid"] == bystander.pid
    assert entry["detail"] is not None and entry["detail"].startswith(
        f"PID {bystander.pid} now belongs to another process")
    outcome = stop(config)
    assert outcome["processes"] == [] and outcome["refused"] == entry["detail"]
    assert "left it alone" in outcome["message"]
    assert bystander.poll() is None

    write_legacy_record(rhl_dir, config, bystander.pid, command, age=3600)
    payload = run(config)  # launched anew; the bystander is not "stopped as stale"
    assert record_of(rhl_dir)["pid"] != bystander.pid and payload["port"] != 1
    assert bystander.poll() is None


def test_legacy_record_of_its_own_process_is_trusted(rhl_dir: Path, demo_config: Factory,
                                                     bystander: subprocess.Popen[bytes]) -> None:
    """The original's record of a process that still runs its command, written after it started: ours."""
    config = demo_config()
    write_legacy_record(rhl_dir, config, bystander.pid, "sleep 60", age=0)
    entry = status(config)
    assert (entry["status"], entry["detail"]) == ("running", None)
    assert stop(config)["processes"] == [{"pid": bystander.pid, "signal": "TERM"}]
    assert bystander.wait(5) == -15


# ---------------------------------------------------------------- 12. logs of stopped keys

def test_stop_removes_the_log_unless_asked_to_keep_it(rhl_dir: Path, demo_config: Factory) -> None:
    config = demo_config()
    log = rhl_dir / "server" / f"{KEY}.log"
    run(config)
    kept = stop(config, keep_log=True)
    assert log.exists() and kept["log"] == str(log) and kept["logs_removed"] == []

    run(config)
    outcome = stop(config)
    assert not log.exists() and outcome["log"] is None and outcome["logs_removed"] == [str(log)]
    assert sorted(os.listdir(rhl_dir / "server")) == []

    log.write_text("left by a service that died\n")  # a key stopped by other means: `stop` still cleans up
    assert stop(config)["logs_removed"] == [str(log)] and not log.exists()


@pytest.mark.parametrize("link_to", ["nowhere", "another record"])
def test_status_file_replaced_by_a_symlink_leaves_the_service_within_stops_reach(
        rhl_dir: Path, demo_config: Factory, tmp_path: Path, link_to: str) -> None:
    config = demo_config()
    run(config)
    pid = record_of(rhl_dir)["pid"]
    target = tmp_path / "elsewhere.json"
    if link_to == "another record":
        gone = subprocess.Popen(["true"])
        gone.wait()
        target.write_text(json.dumps({"status": "running", "pid": gone.pid, "port": 1, "start_time": "proc:1"}))
    status_file(rhl_dir).unlink()
    status_file(rhl_dir).symlink_to(target)

    outcome = stop(config)
    assert outcome["processes"] == [{"pid": pid, "signal": "TERM"}]
    assert not alive(pid) and not status_file(rhl_dir).is_symlink()
    assert target.exists() == (link_to == "another record")  # the link goes, never what it points to


def test_launch_taken_over_by_the_running_service_stops_its_copy(rhl_dir: Path, demo_config: Factory,
                                                                 tmp_path: Path) -> None:
    """A service started without our environment marker (an older launcher's) rewrites its status file
    in place for longer than the re-reads, so a launch happens; when its record comes back, the launch
    stops the copy it started and uses that service (it used to raise "taken over" and orphan the copy)."""
    script = tmp_path / "rewriter.py"
    script.write_text(REWRITER)
    config = demo_config(command=f"{sys.executable} {script} {{status_file}} 1.5 0.3 localhost")
    path = status_file(rhl_dir)
    path.parent.mkdir(parents=True, mode=0o700)
    elder = subprocess.Popen([sys.executable, str(script), str(path), "1.5", "0.3", "localhost"],
                             start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        started = Path(f"/proc/{elder.pid}/stat").read_text().rpartition(")")[2].split()[19]
        path.write_text(json.dumps({"status": "starting", "pid": elder.pid, "start_time": f"proc:{started}",
                                    "command": config["command"], "network_interface": "localhost"}))
        wait_until(lambda: half_written(rhl_dir), "half a status file")

        payload = run(config)

        assert payload["port"] == record_of(rhl_dir)["port"] and record_of(rhl_dir)["pid"] == elder.pid
        wait_until(lambda: processes_running(str(script)) == [elder.pid], "the end of the copy")
    finally:
        elder.kill()
        elder.wait()
