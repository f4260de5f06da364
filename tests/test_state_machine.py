"""The launcher's state machine (launcher.py) on an in-memory host (tests/fakehost.py): no processes, no SSH.

What the host's shell programs would answer is scripted per program; the
handshake is a real GET to a real HTTP server of the test. The same
scenarios run end to end against real processes and a real sshd in
test_local.py, test_lifecycle.py and test_ssh.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from remote_http_launcher import launcher as launcher_module
from remote_http_launcher import scripts
from remote_http_launcher.config import load_config
from remote_http_launcher.errors import HandshakeError, LaunchError, ServiceFailedError
from remote_http_launcher.hosts.base import ScriptResult
from remote_http_launcher.launcher import Launcher

from .fakehost import FakeHost

KEY = "svc"
LAUNCH_ARGS = ["workdir", "log", "status_file", "command", "conda", "service", "lock", "lock_token", "first", "exec"]


class Healthcheck(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthcheck" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 answering /healthcheck: the service the records point at."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthcheck)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    monkeypatch.setattr(launcher_module, "VERIFY_TIMEOUT", 0.5)  # a clock: how long a silent port is retried
    return FakeHost()


def launcher(tmp_path: Path, **fields: Any) -> Launcher:
    config = load_config({"workdir": "/w", "key": KEY, "command": "serve --port 0", "handshake": "healthcheck",
                          "network_interface": "127.0.0.1", "startup_timeout": 2, **fields})
    return Launcher(config, KEY, tmp_path / "client.json")


def status_file(host: FakeHost) -> str:
    return f"{host.state_dir}/{KEY}.json"


def launch_starts(host: FakeHost, port: int | None, *, status: str = "running") -> None:
    """The launch program starts a process that writes its record (as service.sh does: after the head on stdin,
    then the lock released by its token), reporting `port`, or only "starting" when it is None."""

    def answer(args: list[str], stdin: bytes) -> ScriptResult:
        given = dict(zip(LAUNCH_ARGS, args, strict=True))
        assert given["service"] == scripts.program("service")
        pid = host.start(listens=(port,) if port else ())
        head = json.loads(stdin.decode().rstrip().rstrip(",") + "}")
        record = {**head, "pid": pid, "start_time": host.processes[pid].start_time, "uid": 0}
        if port is not None:
            record.update(status=status, port=port)
        host.write_json(given["status_file"], record)
        if given["lock_token"] in host.files.get(given["lock"], b"").decode():
            host.remove(given["lock"])
        return ScriptResult(0, f"{pid}\n", "")

    host.answers["launch"] = answer


def test_a_running_service_is_reused_without_a_launch(tmp_path: Path, host: FakeHost, port: int) -> None:
    pid = host.start(listens=(port,))
    host.write_json(status_file(host), {"status": "running", "pid": pid, "port": port,
                                        "start_time": host.processes[pid].start_time})
    payload, state = launcher(tmp_path).serve(host)
    assert (payload["hostname"], payload["port"], state.pid) == ("127.0.0.1", port, pid)
    assert host.ran == ["process_info"]  # the identity check, nothing else
    assert json.loads((tmp_path / "client.json").read_text())["port"] == port


def test_a_record_of_a_gone_process_is_replaced_by_one_launch(tmp_path: Path, host: FakeHost, port: int) -> None:
    host.write_json(status_file(host), {"status": "running", "pid": 4242, "port": port, "start_time": "proc:1"})
    launch_starts(host, port)
    payload, state = launcher(tmp_path).serve(host)
    assert state.pid in host.processes and state.pid != 4242 and payload["port"] == port
    assert host.ran.count("launch") == 1
    assert "key_processes" in host.ran  # what an earlier launch left running is looked for first
    assert host.signals == []  # nothing of the stale record's was ours to signal
    assert f"{host.state_dir}/{KEY}.lock" not in host.files  # released by the service


def test_a_reused_pid_is_not_the_service(tmp_path: Path, host: FakeHost, port: int) -> None:
    """The recorded PID lives but with another start time: another process; a new launch, nothing signalled."""
    pid = host.start(listens=(port,))
    host.write_json(status_file(host), {"status": "running", "pid": pid, "port": port, "start_time": "proc:1"})
    launch_starts(host, port)
    state = launcher(tmp_path).serve(host)[1]
    assert state.pid != pid and host.ran.count("launch") == 1
    assert host.signals == [] and pid in host.processes


def test_a_starting_service_is_waited_for(tmp_path: Path, host: FakeHost, port: int) -> None:
    pid = host.start(listens=(port,))
    start_time = host.processes[pid].start_time
    host.write_json(status_file(host), {"status": "starting", "pid": pid, "start_time": start_time})
    host.after_reads[status_file(host)] = (3, json.dumps({"status": "running", "pid": pid, "port": port,
                                                          "start_time": start_time}).encode())
    state = launcher(tmp_path).serve(host)[1]
    assert (state.pid, state.port) == (pid, port)
    assert "launch" not in host.ran


def test_a_running_record_whose_port_does_not_answer_is_stopped_and_relaunched(
        tmp_path: Path, host: FakeHost, port: int) -> None:
    pid = host.start()
    host.write_json(status_file(host), {"status": "running", "pid": pid, "port": 1,
                                        "start_time": host.processes[pid].start_time})
    launch_starts(host, port)
    state = launcher(tmp_path).serve(host)[1]
    assert host.signals[0] == (pid, "TERM")  # ours (PID and start time): stopped before the relaunch
    assert state.port == port and host.ran.count("launch") == 1


@pytest.mark.parametrize(("code", "stderr", "step"), [
    (scripts.Exit.WORKDIR, "cannot create workdir /w (cannot create directory '/w': Permission denied)", "workdir"),
    (scripts.Exit.NO_CONDA, "conda not found (looked in PATH)", "conda"),
    (scripts.Exit.STATE_DIR, "cannot create state directory /s", "state directory"),
    (2, "sh: 1: syntax error\nsh: the last line", "launch"),
])
def test_a_failed_launch_is_one_line_naming_its_step(tmp_path: Path, host: FakeHost, code: int, stderr: str,
                                                     step: str) -> None:
    host.answers["launch"] = lambda args, stdin: ScriptResult(code, "", stderr + "\n")
    with pytest.raises(LaunchError) as raised:
        launcher(tmp_path).serve(host)
    assert str(raised.value) == f"{KEY}: {step} on fakehost: {stderr.splitlines()[-1]}"
    assert raised.value.step == step
    assert f"{host.state_dir}/{KEY}.lock" not in host.files  # the launcher released its lock
    assert not (tmp_path / "client.json").exists()


def test_a_service_that_exits_before_its_port_fails_with_its_log(tmp_path: Path, host: FakeHost) -> None:
    launch_starts(host, None)
    host.files[f"{host.state_dir}/{KEY}.log"] = b"starting\nTraceback ...\nValueError: bad option\n"
    original = host.answers["process_info"]

    def exited(args: list[str], stdin: bytes) -> ScriptResult:
        host.processes.pop(int(args[0]), None)  # the process dies before it reports its port
        return original(args, stdin)

    host.answers["process_info"] = exited
    with pytest.raises(ServiceFailedError) as raised:
        launcher(tmp_path).serve(host)
    message = str(raised.value)
    first, *lines = message.splitlines()
    assert first == f"{KEY}: service on fakehost exited before reporting its port; last {len(lines)} lines of its log:"
    assert lines[0] == "  starting" and lines[-1] == "  ValueError: bad option"


def test_a_service_that_reports_failed_is_stopped(tmp_path: Path, host: FakeHost, port: int) -> None:
    launch_starts(host, port, status="failed")
    with pytest.raises(ServiceFailedError, match="reported status 'failed'"):
        launcher(tmp_path).serve(host)
    assert [signal for _, signal in host.signals][:1] == ["TERM"]


def test_a_launched_service_whose_port_never_answers_is_stopped(tmp_path: Path, host: FakeHost) -> None:
    launch_starts(host, 1)
    with pytest.raises(HandshakeError) as raised:
        launcher(tmp_path).serve(host)
    assert "reported port 1 but" in str(raised.value) and "\n" not in str(raised.value)
    assert host.ran.count("launch") == 1 and host.signals[0][1] == "TERM"


def test_a_lock_held_by_a_dead_local_launcher_is_broken(tmp_path: Path, host: FakeHost, port: int) -> None:
    """A launch lock whose owner (a process of this machine) is gone does not block the launch."""
    import socket

    lock = f"{host.state_dir}/{KEY}.lock"
    host.write_json(lock, {"owner": socket.gethostname(), "pid": 2**22 + 7, "started": "proc:1", "time": 0,
                           "token": "someone"})
    launch_starts(host, port)
    assert launcher(tmp_path).serve(host)[1].port == port
    assert lock not in host.files and host.ran.count("launch") == 1


def stock_launch_starts(host: FakeHost, port: int, *, listens: bool = True, log: bytes = b"") -> None:
    """The launch program of a stock server, as service.sh does it: the ports spec after the job's three empty
    arguments (then the setup lines, none); the chosen port (`port`) replaces the placeholder; a `starting`
    record with `stock_ports`."""

    def answer(args: list[str], stdin: bytes) -> ScriptResult:
        given = dict(zip([*LAUNCH_ARGS, "job_id", "node", "restarts", "ports", "setup"], args, strict=True))
        low, high, spec = given["ports"].split()
        name, placeholder = spec.split("=")
        assert (name, int(low), int(high)) == ("port", 20000, 29999) and placeholder in given["command"]
        pid = host.start(listens=(port,) if listens else ())
        head = json.loads(stdin.decode().rstrip().rstrip(",") + "}")
        host.write_json(given["status_file"], {**head, "pid": pid, "start_time": host.processes[pid].start_time,
                                               "stock_ports": {"port": port}})
        host.write_atomic(given["log"], log)
        if given["lock_token"] in host.files.get(given["lock"], b"").decode():
            host.remove(given["lock"])
        return ScriptResult(0, f"{pid}\n", "")

    host.answers["launch"] = answer


def test_a_stock_server_is_recorded_running_by_the_launcher(tmp_path: Path, host: FakeHost, port: int) -> None:
    stock_launch_starts(host, port, log=f"listening at http://0.0.0.0:{port}/lab?token=abc123\n".encode())
    run = launcher(tmp_path, command="serve --port {port}", url_pattern=r"http://\S+token=\w+")
    payload, state = run.serve(host)
    record = host.json(status_file(host))
    assert (record["status"], record["port"], record["url"]) == ("running", port,
                                                                 f"http://0.0.0.0:{port}/lab?token=abc123")
    assert (state.status, state.pid) == ("running", record["pid"])
    assert payload["url"] == f"http://127.0.0.1:{port}/lab?token=abc123"
    assert "port_listener" in host.ran  # its own process group holds the port


def test_a_stock_server_whose_port_another_process_holds_is_not_running(tmp_path: Path, host: FakeHost,
                                                                       port: int) -> None:
    """The port answers (the test's HTTP server), but the launched process does not listen there: never
    `running`; it is stopped and relaunched once, then one error."""
    stock_launch_starts(host, port, listens=False)
    with pytest.raises(ServiceFailedError, match="did not report its port within"):
        launcher(tmp_path, command="serve --port {port}", startup_timeout=0.5).serve(host)
    assert host.ran.count("launch") == 2
    assert host.json(status_file(host))["status"] == "starting"


# ---------------------------------------------------------------- a record the host remembers


def counting_server(gets: list[str]) -> ThreadingHTTPServer:
    """A real HTTP server on 127.0.0.1 answering /healthcheck, each GET's path appended to `gets` first."""

    class Counting(Healthcheck):
        def do_GET(self) -> None:
            gets.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def remote_launcher(tmp_path: Path) -> Launcher:
    return launcher(tmp_path, ssh_hostname="fakehost", hostname="127.0.0.1")


def test_a_remembered_record_is_checked_beside_the_read_of_the_status_file(
        tmp_path: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that remembers the status file (a connection broker) gives the port before the file is read
    again: this machine's handshake is under way while the read is, and is not made a second time."""
    gets: list[str] = []
    server = counting_server(gets)
    port = server.server_address[1]
    pid = host.start(listens=(port,))
    host.write_json(status_file(host), {"status": "running", "pid": pid, "port": port,
                                        "start_time": host.processes[pid].start_time})
    remembered = host.files[status_file(host)]
    monkeypatch.setattr(host, "recall_status_file", lambda name: remembered if name == f"{KEY}.json" else None)
    read_status_file, waited = host.read_status_file, []

    def read_after_the_handshake(name: str) -> Any:
        deadline = time.monotonic() + 5
        while not gets and time.monotonic() < deadline:
            time.sleep(0.01)
        waited.append(bool(gets))
        return read_status_file(name)

    monkeypatch.setattr(host, "read_status_file", read_after_the_handshake)
    try:
        payload, state = remote_launcher(tmp_path).serve(host)
    finally:
        server.shutdown()
        server.server_close()
    assert waited == [True] and gets == ["/healthcheck"]
    assert (payload["hostname"], payload["port"], state.pid) == ("127.0.0.1", port, pid)


def test_a_remembered_record_that_changed_since_is_not_taken(tmp_path: Path, host: FakeHost,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The host remembers an older record (another port, which still answers): the run checks and gives
    the port of the record it reads now."""
    old_gets: list[str] = []
    new_gets: list[str] = []
    old, new = counting_server(old_gets), counting_server(new_gets)
    pid = host.start(listens=(new.server_address[1],))
    record = {"status": "running", "pid": pid, "port": new.server_address[1],
              "start_time": host.processes[pid].start_time}
    host.write_json(status_file(host), record)
    remembered = json.dumps({**record, "port": old.server_address[1]}).encode()
    monkeypatch.setattr(host, "recall_status_file", lambda name: remembered)
    try:
        payload = remote_launcher(tmp_path).serve(host)[0]
        assert payload["port"] == new.server_address[1] and new_gets == ["/healthcheck"]
        assert json.loads((tmp_path / "client.json").read_text())["port"] == new.server_address[1]
        assert "launch" not in host.ran
    finally:
        for server in (old, new):
            server.shutdown()
            server.server_close()
