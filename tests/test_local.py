"""End-to-end tests of local mode: real processes, real state files, real HTTP.

Every service is the demo service started by the launcher (or, for the
compatibility test, by the test itself); the `rhl_dir` fixture kills what the
server files record, and tests kill any other process they start.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from remote_http_launcher import ConfigError, run
from remote_http_launcher.progress import Progress

from .conftest import DEMO_SERVICE
from .posix import SIGKILL, getsid, getuid, killpg

KEY = "demo-localhost"
Factory = Callable[..., dict[str, Any]]


# Helpers -------------------------------------------------------------------

def server_file(rhl_dir: Path, key: str = KEY) -> Path:
    return rhl_dir / "server" / f"{key}.json"


def client_file(rhl_dir: Path, key: str = KEY) -> Path:
    return rhl_dir / "client" / f"{key}.json"


def server_record(rhl_dir: Path, key: str = KEY) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(server_file(rhl_dir, key).read_text())
    return record


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def http_get(port: int, path: str = "/healthcheck", host: str = "localhost") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
        return response.status, response.read()


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None when gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rpartition(")")[2].split()


def alive(pid: int) -> bool:
    """True for a live process; a zombie (nobody reaped it yet) counts as gone."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive after {timeout} s"
        time.sleep(0.02)


def kill_group(pid: int) -> None:
    try:
        killpg(pid, SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def service_groups(marker: str) -> set[int]:
    """Process groups of live processes whose command line mentions `marker` (a status file path)."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = proc_stat(int(entry.name))
        if marker in cmdline and fields is not None and fields[0] != "Z":
            groups.add(int(fields[2]))
    return groups


def starts_in_log(rhl_dir: Path, key: str = KEY) -> int:
    return (rhl_dir / "server" / f"{key}.log").read_text().count("demo service starting")


def recording_progress() -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    return Progress("basic", stream=stream, live=False), stream


def original_accepts_running(record: Any) -> bool:
    """The original 0.2.0 implementation's checks on a server file with status 'running'."""

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    return (
        isinstance(record, dict)
        and record.get("status") == "running"
        and is_int(record.get("port")) and 1 <= record["port"] <= 65535
        and isinstance(record.get("command"), str) and record["command"] != ""
        and is_int(record.get("uid"))
        and is_int(record.get("pid"))
        and isinstance(record.get("network_interface"), str)
        and ("parameters" not in record or isinstance(record["parameters"], dict))
    )


@pytest.fixture
def launched(rhl_dir: Path, demo_config: Factory) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """A demo service started through run(): (config, payload)."""
    config = demo_config()
    payload = run(config)
    yield config, payload


# First launch ---------------------------------------------------------------

def test_run_launches_service_and_writes_state_files(rhl_dir: Path, demo_config: Factory, tmp_path: Path) -> None:
    parameters = {"dataset": "x", "n": 3, "nested": {"ok": True}}
    config = demo_config(file_parameters=parameters)

    payload = run(config)

    assert payload["hostname"] == "localhost"
    assert isinstance(payload["port"], int)
    assert payload["parameters"] == parameters
    assert http_get(payload["port"]) == (200, b"ok\n")

    record = server_record(rhl_dir)
    status_path = server_file(rhl_dir)
    assert record["status"] == "running"
    assert record["port"] == payload["port"]
    assert record["workdir"] == str(tmp_path / "work dir")
    assert record["log"] == str(rhl_dir / "server" / f"{KEY}.log")
    assert record["command"] == (f"{sys.executable} {DEMO_SERVICE} --status-file {status_path} "
                                 f"--host localhost ")
    assert record["network_interface"] == "localhost"
    assert record["uid"] == getuid()
    assert record["parameters"] == parameters
    assert alive(record["pid"])
    fields = proc_stat(record["pid"])
    assert fields is not None
    assert record["start_time"] == f"proc:{fields[19]}"
    assert original_accepts_running(record)
    # the service runs in its own session, in the workdir
    assert getsid(record["pid"]) == record["pid"]
    assert os.readlink(f"/proc/{record['pid']}/cwd") == str(tmp_path / "work dir")

    assert json.loads(client_file(rhl_dir).read_text()) == payload
    assert mode(client_file(rhl_dir)) == 0o600
    assert mode(rhl_dir / "client") == 0o700
    assert mode(rhl_dir / "server") == 0o700
    assert mode(rhl_dir) == 0o700  # the base directory the launcher created, too
    assert mode(status_path) == 0o600
    log = rhl_dir / "server" / f"{KEY}.log"
    assert mode(log) == 0o600
    assert f"demo service listening on localhost:{payload['port']}" in log.read_text()
    assert not (rhl_dir / "server" / f"{KEY}.lock").exists()


def test_progress_reports_phases_and_summary(rhl_dir: Path, demo_config: Factory) -> None:
    progress, stream = recording_progress()
    payload = run(demo_config(), progress=progress)
    lines = stream.getvalue().splitlines()
    assert any("launching service on localhost" in line for line in lines)
    assert re.search(rf"ready: http://localhost:{payload['port']}/ \(\d+\.\d\d s\)$", lines[-1])


# Reconnecting ---------------------------------------------------------------

def test_second_run_reconnects_without_relaunch(rhl_dir: Path, launched: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, first = launched
    pid = server_record(rhl_dir)["pid"]
    progress, stream = recording_progress()

    second = run(config, progress=progress)

    assert second == first
    assert server_record(rhl_dir)["pid"] == pid
    assert starts_in_log(rhl_dir) == 1
    assert "reconnected:" in stream.getvalue()
    assert "launching" not in stream.getvalue()


def test_missing_client_file_reuses_server_file(rhl_dir: Path, launched: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, first = launched
    pid = server_record(rhl_dir)["pid"]
    client_file(rhl_dir).unlink()
    progress, stream = recording_progress()

    second = run(config, progress=progress)

    assert second == first
    assert server_record(rhl_dir)["pid"] == pid
    assert starts_in_log(rhl_dir) == 1
    assert "launching" not in stream.getvalue()
    assert f"checking port {first['port']}" in stream.getvalue()
    assert json.loads(client_file(rhl_dir).read_text()) == first


def test_killed_service_is_relaunched(rhl_dir: Path, launched: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, _ = launched
    old_pid = server_record(rhl_dir)["pid"]
    killpg(old_pid, SIGKILL)
    wait_gone(old_pid)

    second = run(config)

    record = server_record(rhl_dir)
    assert record["pid"] != old_pid
    assert alive(record["pid"])
    assert record["status"] == "running"
    assert record["port"] == second["port"]
    assert http_get(second["port"]) == (200, b"ok\n")
    assert json.loads(client_file(rhl_dir).read_text()) == second
    assert starts_in_log(rhl_dir) == 1  # the log restarts with each launch


def test_relaunch_after_reported_failure(rhl_dir: Path, demo_config: Factory) -> None:
    """A status file left at 'failed' by the last launch does not block the next one."""
    with pytest.raises(Exception, match="failed"):
        run(demo_config(args="--fail"))
    assert server_record(rhl_dir)["status"] == "failed"

    payload = run(demo_config())

    assert server_record(rhl_dir)["status"] == "running"
    assert http_get(payload["port"]) == (200, b"ok\n")


# Compatibility with the original implementation's server files ---------------

def test_reuses_server_file_written_by_original(rhl_dir: Path, demo_config: Factory, tmp_path: Path) -> None:
    config = demo_config(file_parameters={"alpha": [1, 2], "beta": "b"})
    server_dir = rhl_dir / "server"
    server_dir.mkdir(parents=True, mode=0o700)
    status, log = server_dir / f"{KEY}.json", server_dir / f"{KEY}.log"
    workdir = Path(config["workdir"])
    workdir.mkdir()
    command = f"{sys.executable} {DEMO_SERVICE} --status-file {status} --host localhost"
    # Detached like the original does it; the service waits for a line on stdin so
    # the status file (which needs its PID) exists before it reads it.
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", "-c", f'read go; exec {command}'], stdin=subprocess.PIPE,
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        record = {"workdir": config["workdir"], "log": str(log), "command": command, "uid": getuid(),
                  "pid": proc.pid, "status": "starting", "network_interface": "localhost",
                  "parameters": config["file_parameters"]}
        status.write_text(json.dumps(record, separators=(",", ":")))
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while json.loads(status.read_text()).get("status") != "running":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        running = json.loads(status.read_text())
        # rewrite as the original leaves it: compact, its key order, port last
        original = {**record, "status": "running", "port": running["port"]}
        status.write_text(json.dumps(original, separators=(",", ":")))
        before = status.read_bytes()

        payload = run(config)

        assert payload == {"hostname": "localhost", "port": running["port"], "parameters": record["parameters"]}
        assert status.read_bytes() == before  # reused as is, nothing relaunched
        assert proc.poll() is None
        assert log.read_text().count("demo service starting") == 1
        assert json.loads(client_file(rhl_dir).read_text()) == payload
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=10)


def test_our_record_passes_the_original_checks(rhl_dir: Path, demo_config: Factory) -> None:
    run(demo_config(file_parameters={"p": 1}))
    assert original_accepts_running(server_record(rhl_dir))
    run(demo_config(key="plain"))
    assert original_accepts_running(server_record(rhl_dir, "plain"))
    assert "parameters" not in server_record(rhl_dir, "plain")


# Workdir ----------------------------------------------------------------------

def test_workdir_with_spaces_and_quotes(rhl_dir: Path, demo_config: Factory, tmp_path: Path) -> None:
    workdir = tmp_path / """work dir 'q' "d\""""
    payload = run(demo_config(workdir=str(workdir)))
    record = server_record(rhl_dir)
    assert workdir.is_dir()
    assert record["workdir"] == str(workdir)
    assert os.readlink(f"/proc/{record['pid']}/cwd") == str(workdir)
    assert http_get(payload["port"])[0] == 200


def test_tilde_workdir_expands_to_home(rhl_dir: Path, demo_config: Factory, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    run(demo_config(workdir="~/svc/data"))
    record = server_record(rhl_dir)
    assert record["workdir"] == str(home / "svc" / "data")
    assert os.readlink(f"/proc/{record['pid']}/cwd") == str(home / "svc" / "data")


# Templates --------------------------------------------------------------------

def free_port_range(size: int = 20) -> tuple[int, int]:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        start = sock.getsockname()[1]
    return start, min(start + size, 65535)


def test_template_namespace(rhl_dir: Path, tmp_path: Path) -> None:
    start, end = free_port_range()
    config = {
        "workdir": str(tmp_path / "wd"),
        "key": "svc-{label.upper()}-{network_interface}",
        "command": ("env RHL_KEY={key} RHL_LABEL={config['label']} " + sys.executable + " " + str(DEMO_SERVICE)
                    + " --status-file {status_file} --host {config['network_interface']}"
                    + " --port-range {port_start} {port_end}"),
        "handshake": "healthcheck",
        "label": "alpha",
        "port_start": start,
        "port_end": end,
    }
    key = "svc-ALPHA-localhost"

    payload = run(config)

    record = server_record(rhl_dir, key)
    status = server_file(rhl_dir, key)
    assert record["command"] == (f"env RHL_KEY={key} RHL_LABEL=alpha {sys.executable} {DEMO_SERVICE} "
                                 f"--status-file {status} --host localhost --port-range {start} {end}")
    assert start <= payload["port"] <= end
    groups = service_groups(str(status))
    assert groups == {record["pid"]}
    environ = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if str(DEMO_SERVICE) in Path(f"/proc/{pid}/cmdline").read_text() and \
                    str(status) in Path(f"/proc/{pid}/cmdline").read_text():
                environ = dict(item.split("=", 1) for item in
                               Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        except OSError:
            continue
    assert environ.get("RHL_KEY") == key
    assert environ.get("RHL_LABEL") == "alpha"


# Concurrency ------------------------------------------------------------------

@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_cli_runs_start_one_service(rhl_dir: Path, demo_config: Factory, tmp_path: Path,
                                               attempt: int) -> None:
    config_path = tmp_path / "service.yaml"
    config_path.write_text(yaml.safe_dump(demo_config()))
    procs = [subprocess.Popen([sys.executable, "-m", "remote_http_launcher", str(config_path), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(20)]
    results = [(proc.wait(timeout=120), proc.stdout.read(), proc.stderr.read())  # type: ignore[union-attr]
               for proc in procs]
    for proc in procs:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]

    assert [code for code, _, _ in results] == [0] * 20, [err for _, _, err in results]
    ports = {json.loads(out)["port"] for _, out, _ in results}
    record = server_record(rhl_dir)
    assert ports == {record["port"]}
    assert service_groups(str(server_file(rhl_dir))) == {record["pid"]}
    assert starts_in_log(rhl_dir) == 1
    assert not (rhl_dir / "server" / f"{KEY}.lock").exists()
    assert sorted(p.name for p in (rhl_dir / "server").iterdir()) == [f"{KEY}.json", f"{KEY}.log"]


# State directories --------------------------------------------------------------

def test_state_dir_from_environment(rhl_dir: Path, demo_config: Factory) -> None:
    payload = run(demo_config())
    assert json.loads((rhl_dir / "client" / f"{KEY}.json").read_text()) == payload
    assert (rhl_dir / "server" / f"{KEY}.json").is_file()


def test_connection_dir_overrides_client_dir(rhl_dir: Path, demo_config: Factory, tmp_path: Path) -> None:
    connections = tmp_path / "connections"
    payload = run(demo_config(), connection_dir=connections)
    assert json.loads((connections / f"{KEY}.json").read_text()) == payload
    assert mode(connections / f"{KEY}.json") == 0o600
    assert not (rhl_dir / "client").exists()
    assert server_record(rhl_dir)["port"] == payload["port"]


def test_connection_dir_equal_to_server_dir_is_refused(rhl_dir: Path, demo_config: Factory) -> None:
    with pytest.raises(ConfigError, match="server state directory"):
        run(demo_config(), connection_dir=rhl_dir / "server")
    assert not (rhl_dir / "server").exists()


def test_workdir_under_home_is_absolute_in_the_command_and_as_written_in_the_key(
        rhl_dir: Path, client_home: Path, demo_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """The README's advice to quote '{workdir}' (for spaces) must not leave a literal '~' in the command."""
    fields = demo_config(workdir="~/my work", key="demo-{workdir.strip('~/').replace(' ', '_')}")
    fields["command"] = f"cd '{{workdir}}' && {fields['command']}"
    path = tmp_path / "home.yaml"
    path.write_text(yaml.safe_dump(fields))
    expected = f"cd '{client_home}/my work' && "
    dry = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and dry.stdout.startswith(expected), dry.stdout + dry.stderr
    run(path)
    record = json.loads((rhl_dir / "server" / "demo-my_work.json").read_text())  # the key as written
    assert record["command"] == dry.stdout.rstrip("\n")  # the dry run showed exactly what ran
    assert record["workdir"] == f"{client_home}/my work" and record["status"] == "running"


SIGNALS_IGNORED = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "signal.signal(signal.SIGQUIT, signal.SIG_IGN); sys.argv = ['remote-http-launcher', *sys.argv[1:]]; "
                   "runpy.run_module('remote_http_launcher', run_name='__main__')")


def _ignored_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return next(int(line.split()[1], 16) for line in handle if line.startswith("SigIgn:"))


def test_a_launcher_ignoring_ctrl_c_still_starts_a_service_that_heeds_it(rhl_dir: Path,
                                                                          config_file: Callable[..., Path]) -> None:
    """As a script's `remote-http-launcher cfg &` is: the service gets SIGINT and SIGQUIT at their defaults
    (what the original's rhl-stop sends first), in a session of its own."""
    proc = subprocess.run([sys.executable, "-c", SIGNALS_IGNORED, str(config_file())], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid = server_record(rhl_dir)["pid"]
    assert _ignored_signals(pid) & (1 << (2 - 1) | 1 << (3 - 1)) == 0  # bits for SIGINT (2) and SIGQUIT (3)
    assert getsid(pid) == pid


def test_a_service_started_by_a_long_lived_caller_leaves_no_zombie(rhl_dir: Path,
                                                                  config_file: Callable[..., Path]) -> None:
    """The launcher spawns a local service as its own child: in a process that lives on (a notebook's
    kernel, this test), the service is reaped once it ends."""
    run(config_file())
    pid = server_record(rhl_dir)["pid"]
    killpg(pid, SIGKILL)
    wait_for_gone = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < wait_for_gone:
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{pid}"), "the ended service is a zombie of its caller"
