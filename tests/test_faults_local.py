"""Local mode under faults: corrupt state files, failing services, stale locks, hostile config values.

Real processes and files throughout; every failure must be a one-line
`LauncherError` (never a traceback) and must leave no process behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from remote_http_launcher import LauncherError, LaunchError, run
from remote_http_launcher.errors import HostError
from remote_http_launcher.hosts.base import Host
from tests.conftest import kill_services
from tests.posix import SIGKILL, getuid, killpg

KEY = "demo-localhost"
Factory = Callable[..., dict[str, Any]]


def server_file(rhl_dir: Path) -> Path:
    return rhl_dir / "server" / f"{KEY}.json"


def client_file(rhl_dir: Path) -> Path:
    return rhl_dir / "client" / f"{KEY}.json"


def server_record(rhl_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(server_file(rhl_dir).read_text())
    return record


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes in process group pgid."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def kill_group(pid: int) -> None:
    try:
        killpg(pid, SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def healthy(port: int) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"http://localhost:{port}/healthcheck", timeout=5) as response:
        return bool(response.status == 200)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# Corrupt state files ----------------------------------------------------------

def corruptions(valid: bytes) -> dict[str, bytes]:
    record = json.loads(valid)
    return {
        "empty": b"",
        "truncated": valid[: len(valid) // 2],
        "list": b"[1, 2, 3]",
        "string": b'"running"',
        "port-string": json.dumps({**record, "port": str(record["port"])}).encode(),
        "port-70000": json.dumps({**record, "port": 70000}).encode(),
        "binary": b"\xff\xfe\x00garbage",
    }


CORRUPTIONS = ["empty", "truncated", "list", "string", "port-string", "port-70000", "binary"]


@pytest.mark.parametrize("variant", CORRUPTIONS)
def test_corrupt_client_file_falls_back_to_server_file(rhl_dir: Path, demo_config: Factory, variant: str) -> None:
    config = demo_config()
    first = run(config)
    pid = server_record(rhl_dir)["pid"]
    client_file(rhl_dir).write_bytes(corruptions(client_file(rhl_dir).read_bytes())[variant])

    second = run(config)

    assert second == first
    assert server_record(rhl_dir)["pid"] == pid  # the service was reused, not relaunched
    assert json.loads(client_file(rhl_dir).read_text()) == first


@pytest.mark.parametrize("variant", CORRUPTIONS)
def test_corrupt_server_file_relaunches(rhl_dir: Path, demo_config: Factory, variant: str) -> None:
    config = demo_config()
    run(config)
    old_pid = server_record(rhl_dir)["pid"]
    try:
        server_file(rhl_dir).write_bytes(corruptions(server_file(rhl_dir).read_bytes())[variant])
        client_file(rhl_dir).unlink()

        payload = run(config)

        record = server_record(rhl_dir)
        assert record["pid"] != old_pid
        assert record["status"] == "running" and record["port"] == payload["port"]
        assert healthy(payload["port"])
        assert group_members(old_pid) == []  # no valid record names it, yet it is ours: not left beside the new one
    finally:
        kill_group(old_pid)


@pytest.mark.parametrize("variant", CORRUPTIONS)
def test_corrupt_server_file_without_service(rhl_dir: Path, demo_config: Factory, variant: str) -> None:
    (rhl_dir / "server").mkdir(parents=True)
    valid = json.dumps({"status": "running", "pid": dead_pid(), "port": 1234}).encode()
    server_file(rhl_dir).write_bytes(corruptions(valid)[variant])

    payload = run(demo_config())

    assert server_record(rhl_dir)["port"] == payload["port"]
    assert healthy(payload["port"])


@pytest.mark.parametrize("which", ["client", "server"])
def test_corrupt_files_through_the_cli(rhl_dir: Path, demo_config: Factory, tmp_path: Path, which: str) -> None:
    import yaml

    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(demo_config()))
    for directory in ("client", "server"):
        (rhl_dir / directory).mkdir(parents=True, exist_ok=True)
    (rhl_dir / which / f"{KEY}.json").write_bytes(b'{"status": "running", "port": ')
    proc = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(config), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr
    assert json.loads(proc.stdout)["port"] == server_record(rhl_dir)["port"]


def test_running_record_of_dead_process_relaunches(rhl_dir: Path, demo_config: Factory) -> None:
    (rhl_dir / "server").mkdir(parents=True)
    server_file(rhl_dir).write_text(json.dumps({"status": "running", "pid": dead_pid(), "port": 1}))
    payload = run(demo_config())
    assert healthy(payload["port"])


def test_reused_pid_is_never_signalled(rhl_dir: Path, demo_config: Factory) -> None:
    """A record whose PID now belongs to another process (other start time) is stale, not ours."""
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (rhl_dir / "server").mkdir(parents=True)
        server_file(rhl_dir).write_text(json.dumps({
            "status": "running", "pid": bystander.pid, "port": 1, "start_time": "proc:1",
            "network_interface": "localhost", "command": "x", "uid": getuid()}))

        payload = run(demo_config())

        assert server_record(rhl_dir)["pid"] != bystander.pid
        assert healthy(payload["port"])
        assert bystander.poll() is None  # untouched
    finally:
        bystander.kill()
        bystander.wait()


# Services that fail to start ------------------------------------------------------

def test_service_reporting_failed(rhl_dir: Path, demo_config: Factory) -> None:
    with pytest.raises(LaunchError) as info:
        run(demo_config(args="--fail"))
    first, *lines = str(info.value).splitlines()
    assert first.endswith("reported status 'failed'; last 2 lines of its log:")
    assert lines[-1] == "  demo service: failing on purpose"  # the log tail
    assert not client_file(rhl_dir).exists()


LINGER = """
import json, os, sys, time
print("reported failure, lingering", flush=True)  # before the record: a run reads the log once it sees "failed"
path = sys.argv[1]
with open(path) as handle:
    record = json.load(handle)
record["status"] = "failed"
with open(path + ".tmp", "w") as handle:
    json.dump(record, handle)
os.replace(path + ".tmp", path)
time.sleep(60)
"""


def test_service_reporting_failed_but_lingering_is_stopped(rhl_dir: Path, demo_config: Factory,
                                                           tmp_path: Path) -> None:
    script = tmp_path / "linger.py"
    script.write_text(LINGER)
    with pytest.raises(LaunchError, match="reported status 'failed'; log: reported failure, lingering"):
        run(demo_config(command=f"{sys.executable} {script} {{status_file}}"))
    pid = server_record(rhl_dir)["pid"]
    assert not alive(pid)
    deadline = time.monotonic() + 5
    while group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert group_members(pid) == []


def test_a_failed_cleanup_does_not_replace_the_error_it_follows(rhl_dir: Path, demo_config: Factory, tmp_path: Path,
                                                                mocker: MockerFixture) -> None:
    """Stopping what a failed launch left goes over the host that may itself have failed (a silent link):
    the run still says why it failed, and adds that the clean-up did not work."""
    script = tmp_path / "linger.py"
    script.write_text(LINGER)
    mocker.patch.object(Host, "signal_group", side_effect=HostError("exec: connection lost (no answer within 2 s)"))
    try:
        with pytest.raises(LaunchError) as info:
            run(demo_config(command=f"{sys.executable} {script} {{status_file}}"))
        assert str(info.value).endswith("reported status 'failed'; log: reported failure, lingering; could not stop "
                                        "it: exec: connection lost (no answer within 2 s)")
    finally:
        kill_services(rhl_dir)


def test_command_that_exits_at_once(rhl_dir: Path, demo_config: Factory) -> None:
    started = time.monotonic()
    with pytest.raises(LaunchError, match="exited before reporting its port; log: "):
        run(demo_config(command="false"))
    assert time.monotonic() - started < 10  # not the 60 s startup timeout


def test_command_that_exits_at_once_shows_log_tail(rhl_dir: Path, demo_config: Factory) -> None:
    started = time.monotonic()
    with pytest.raises(LaunchError) as info:
        run(demo_config(command="echo first line; echo 'no such thing' >&2; exit 3"))
    assert time.monotonic() - started < 10
    assert str(info.value).endswith("exited before reporting its port; last 2 lines of its log:\n  first line\n"
                                    "  no such thing")


def test_a_long_log_tail_is_its_last_ten_lines_each_cut(rhl_dir: Path, demo_config: Factory) -> None:
    """A failure's log is read as lines: the last ten, each cut, under the one line that says what failed."""
    with pytest.raises(LaunchError) as info:
        run(demo_config(command="for i in $(seq 1 14); do echo line $i; done; printf 'x%.0s' $(seq 2000); "
                                "echo; exit 3"))
    first, *lines = str(info.value).splitlines()
    assert first.endswith("exited before reporting its port; last 10 lines of its log:")
    assert lines[:-1] == [f"  line {i}" for i in range(6, 15)]
    assert lines[-1] == "  " + "x" * 197 + "..."


def test_silent_service_is_stopped_after_startup_timeout(rhl_dir: Path, demo_config: Factory) -> None:
    started = time.monotonic()
    with pytest.raises(LaunchError, match=r"did not report its port within 1 s \(stopped it\)"):
        run(demo_config(command="sleep 30", startup_timeout=1))
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 10
    pid = server_record(rhl_dir)["pid"]
    assert server_record(rhl_dir)["status"] == "starting"
    assert not alive(pid)
    deadline = time.monotonic() + 5
    while group_members(pid) and time.monotonic() < deadline:  # SIGTERM reaches the group at once
        time.sleep(0.02)
    assert group_members(pid) == []  # the `sleep` child went too: no orphan


def test_a_service_that_listens_but_never_reports_is_told_how_to(rhl_dir: Path, demo_config: Factory) -> None:
    """It listens on a port of its own choosing and writes no status file: the error says which port, and
    the two ways a service gets counted as running."""
    with pytest.raises(LaunchError) as info:
        run(demo_config(command=f"{sys.executable} -m http.server 0 --bind 127.0.0.1", startup_timeout=3))
    first = str(info.value).splitlines()[0]
    listening = re.search(r"service on localhost listens on port (\d+) but never reported it through its status "
                          r"file within 3 s \(stopped it\); it must write ", first)
    assert listening is not None, first
    assert 'it must write {"status": "running", "port": N} to {status_file} (see the status-file protocol in the ' \
           "docs), or, for a server that cannot, pass {port} to it in command" in first
    assert f"port {listening.group(1)}" in str(info.value)  # http.server's own line in the log agrees


def test_a_stock_server_on_another_port_than_its_port_is_told(rhl_dir: Path, demo_config: Factory) -> None:
    with pytest.raises(LaunchError) as info:
        run(demo_config(command=f"{sys.executable} -m http.server 0 --bind 127.0.0.1 # {{port}}", startup_timeout=3))
    assert re.search(r"service on localhost listens on port \d+ but not on the port \{port\} gave it within 3 s "
                     r"\(stopped it\); make the command pass \{port\} to the server's own port option",
                     str(info.value).splitlines()[0]), str(info.value)


def test_workdir_that_cannot_be_created(rhl_dir: Path, demo_config: Factory, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(LaunchError) as info:
        run(demo_config(workdir=str(blocker / "sub")))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{KEY}: workdir on localhost: cannot create workdir {blocker / 'sub'} (cannot create "
                              "directory ")
    assert message.replace("‘", "'").replace("’", "'").endswith(f"'{blocker}': Not a directory)")  # the OS's reason
    assert not server_file(rhl_dir).exists()


def test_log_that_cannot_be_written(rhl_dir: Path, demo_config: Factory) -> None:
    log = rhl_dir / "server" / f"{KEY}.log"
    log.mkdir(parents=True)
    with pytest.raises(LaunchError) as info:
        run(demo_config())
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{KEY}: log file on localhost: ")
    assert f"log file {log}" in str(info.value)
    assert not server_file(rhl_dir).exists()


def test_failures_through_the_cli_are_one_line(rhl_dir: Path, demo_config: Factory, tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(demo_config(command="false")))
    proc = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "exited before reporting its port" in errors[0]
    assert "Traceback" not in proc.stderr


# Stale locks -----------------------------------------------------------------------

def write_lock(rhl_dir: Path, content: bytes, age: float = 0.0) -> Path:
    lock = rhl_dir / "server" / f"{KEY}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_bytes(content)
    if age:
        then = time.time() - age
        os.utime(lock, (then, then))
    return lock


@pytest.mark.parametrize("lock_kind", ["dead-owner", "old-other-host", "old-live-owner", "garbage-old"])
def test_stale_lock_is_broken(rhl_dir: Path, demo_config: Factory, lock_kind: str) -> None:
    host = socket.gethostname()
    content = {
        "dead-owner": {"owner": host, "pid": dead_pid(), "time": time.time(), "token": "t"},
        "old-other-host": {"owner": "elsewhere.invalid", "pid": 1, "time": time.time() - 3600, "token": "t"},
        "old-live-owner": {"owner": host, "pid": os.getpid(), "time": time.time() - 3600, "token": "t"},
    }.get(lock_kind)
    lock = write_lock(rhl_dir, json.dumps(content).encode() if content else b"{not json", age=3600)
    started = time.monotonic()

    payload = run(demo_config(startup_timeout=5))

    assert time.monotonic() - started < 10
    assert healthy(payload["port"])
    assert not lock.exists()
    assert sorted(p.name for p in lock.parent.iterdir()) == [f"{KEY}.json", f"{KEY}.log"]  # no *.broken left


# Hostile config values -------------------------------------------------------------

def injections(marker: Path) -> list[str]:
    return [f"$(touch {marker})", f"`touch {marker}`", f";touch {marker}", f"';touch {marker};'",
            f'";touch {marker};"', f"|touch {marker}", f"&& touch {marker}", "%s%n\\n"]


def test_shell_metacharacters_in_config_values_are_inert(rhl_dir: Path, demo_config: Factory,
                                                         tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    values = injections(marker)
    workdir = Path(f"{tmp_path}/{' '.join(values)}")
    parameters = {f"p{i}": value for i, value in enumerate(values)}
    extras = {f"extra{i}": value for i, value in enumerate(values)}

    payload = run(demo_config(workdir=str(workdir), file_parameters=parameters, **extras))

    assert not marker.exists()
    record = server_record(rhl_dir)
    assert record["parameters"] == parameters
    assert payload["parameters"] == parameters
    assert record["workdir"] == str(workdir)
    assert os.readlink(f"/proc/{record['pid']}/cwd") == str(workdir)
    assert healthy(payload["port"])


def test_shell_metacharacters_in_workdir_path_segments(rhl_dir: Path, demo_config: Factory, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    workdir = tmp_path / f"a$(touch {marker.name})" / f"b`touch {marker.name}`" / f"c;touch {marker.name};'\"d"
    run(demo_config(workdir=str(workdir)))
    assert workdir.is_dir()
    assert not marker.exists()
    assert [p.name for p in tmp_path.rglob(marker.name)] == []  # not even relative to some cwd
    assert not (Path.cwd() / marker.name).exists()


@pytest.mark.parametrize("index", range(3))
def test_shell_metacharacters_in_conda_are_inert(rhl_dir: Path, demo_config: Factory, tmp_path: Path,
                                                 index: int) -> None:
    marker = tmp_path / "pwned"
    conda = f"/nonexistent/env {injections(marker)[index]}"
    with pytest.raises(LauncherError) as info:
        run(demo_config(conda=conda))
    assert "conda" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()
