"""`tunnel: true` against a real sshd and the real demo service: the keeper process end to end
(`connection_persist: 0`; tests/test_broker.py has the tunnels a connection broker keeps).

The service binds the server's 127.0.0.1 (another network namespace when the
harness can make one), so the only way in is our tunnel. Every test uses its
own key, client HOME and connection directory; keepers and services it
started are stopped afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import AuthenticationError, run
from remote_http_launcher.commands.stop import stop_keeper
from tests.conftest import ROOT, wait_for
from tests.posix import SIGKILL, TAKE_TERMINAL_AND_RUN, pty, python_path
from tests.remote import keeper_processes
from tests.ssh_client import ALIAS, REMOTE_STATE, demo_config, node_key, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import SSHServer

# TAKE_TERMINAL_AND_RUN (tests/posix.py): the CLI with the pty on stdin as its controlling terminal, like a
# command typed in a shell.
WATCHDOG = 1  # seconds between the keeper's checks
GIVE_UP = 12  # seconds: the reconnect_timeout of a test whose keeper must give up

CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"')


# ---------------------------------------------------------------- fixtures and helpers (client HOME: conftest.py)

@pytest.fixture
def server(sshd: SSHServer, client_home: Path) -> Iterator[SSHServer]:
    sshd.start()  # a previous test may have stopped it
    sshd.write_ssh_config(client_home, ALIAS)
    yield sshd
    sshd.start()
    sshd.run(CLEANUP)


@pytest.fixture
def make_config(server: SSHServer, remote_demo: str, connection_dir: Path,
                request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    return partial(demo_config, server, remote_demo, node_key("tun-", request.node.name),
                   network_interface="127.0.0.1", tunnel=True, watchdog_interval=WATCHDOG, connection_persist=0)


def cli(config: dict[str, Any], tmp_path: Path, **popen: Any) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    options: dict[str, Any] = {"stdin": subprocess.DEVNULL, "capture_output": True, **popen}
    return subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path), "--json"], check=False,
                          env={**os.environ, "PYTHONPATH": python_path(ROOT)}, text=True, timeout=120, **options)


def up(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    result = cli(config, tmp_path)
    assert result.returncode == 0, result.stderr
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload



def get(port: int, path: str = "/healthcheck", timeout: float = 10) -> bytes:
    with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=timeout) as response:
        body: bytes = response.read()
        return body


def remote_state(server: SSHServer, key: str) -> dict[str, Any]:
    result = server.run(f"cat {REMOTE_STATE}/{key}.json")
    assert result.returncode == 0, result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


def read_terminal(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: no process holds the terminal any more
            return
        if not chunk:
            return
        chunks.append(chunk)


def listening_addresses(port: int) -> set[str]:
    """Local addresses of TCP sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


# ---------------------------------------------------------------- the tunnel outlives the command

def test_service_on_server_loopback_answers_through_tunnel_after_cli_exits(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path,
        tmp_path: Path) -> None:
    config = make_config()
    payload = up(config, tmp_path)
    state = remote_state(server, config["key"])
    assert payload["hostname"] == "localhost" and payload["port"] != state["port"]
    assert (payload["tunneled-host"], payload["tunneled-port"], payload["tunneled-network-interface"]) == \
        (server.host, state["port"], "127.0.0.1")
    assert json.loads((connection_dir / f"{config['key']}.json").read_text()) == payload
    assert keeper_processes(str(connection_dir)) == [payload["keeper_pid"]]
    assert Path(payload["keeper_log"]).parent == connection_dir

    assert get(payload["port"]) == b"ok\n"  # the command has exited; the keeper serves the port
    body = get(payload["port"], "/bytes?n=3000000")
    assert len(body) == 3_000_000 and set(body) == {ord("x")}
    assert listening_addresses(payload["port"]) == {"0100007F"}  # 127.0.0.1 only
    if server.netns:  # the service itself is unreachable from here: the tunnel is the only way in
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{server.host}:{state['port']}/healthcheck", timeout=2)


def test_warm_run_reuses_client_file_without_new_keeper(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path,
        tmp_path: Path) -> None:
    config = make_config()
    first = up(config, tmp_path)
    second = cli(config, tmp_path)
    assert second.returncode == 0 and json.loads(second.stdout) == first
    assert "reconnected" in second.stderr
    assert keeper_processes(str(connection_dir)) == [first["keeper_pid"]]


def test_a_config_warning_is_shown_once_by_the_command_not_again_by_the_keeper(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    result = cli(make_config(colour="blue"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "colour" in line] == [
        "warning: config: field 'colour' is not a field of the launcher and no template (key, command) uses it; "
        "it is ignored"]


def test_extra_ports_get_their_own_forwards(server: SSHServer, make_config: Callable[..., dict[str, Any]],
                                            tmp_path: Path) -> None:
    config = make_config(args="--extra-port admin_port --extra-port metrics-port")
    payload = up(config, tmp_path)
    state = remote_state(server, config["key"])
    for name in ("admin_port", "metrics-port"):
        assert payload[f"tunneled-{name}"] == state[name]
        # A forward of its own, on loopback here (the remote port's number may come up for it by chance: the
        # server's network namespace has its own ports).
        assert payload[name] != payload["port"]
        assert get(payload[name]) == b"ok\n"
        assert listening_addresses(payload[name]) == {"0100007F"}


def unused_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_local_port_pins_the_tunnel_across_relaunches(server: SSHServer, make_config: Callable[..., dict[str, Any]],
                                                      tmp_path: Path) -> None:
    local = unused_local_port()
    config = make_config(local_port=local)
    first = up(config, tmp_path)
    assert first["port"] == local and get(local) == b"ok\n"
    stopped = subprocess.run([sys.executable, "-m", "remote_http_launcher", "stop", str(tmp_path / "config.yaml")],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
                             env={**os.environ, "PYTHONPATH": python_path(ROOT)})
    assert stopped.returncode == 0, stopped.stderr
    second = up(config, tmp_path)  # a new service, a new keeper: the same local port (the bookmark)
    assert second["keeper_pid"] != first["keeper_pid"] and second["port"] == local and get(local) == b"ok\n"


def test_a_taken_local_port_is_one_error_before_anything_is_launched(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    config = make_config(local_port=unused_local_port())
    with socket.socket() as other:
        other.bind(("127.0.0.1", config["local_port"]))
        other.listen()
        result = cli(config, tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"error: local_port: 127.0.0.1:{config['local_port']} is in use by "
                                              "another program (Address already in use); free it or choose another "
                                              "local_port")
    assert server.run(f"test -e {REMOTE_STATE}/{config['key']}.json").returncode != 0  # nothing launched


# ---------------------------------------------------------------- the watchdog

def test_service_exit_ends_keeper_and_removes_client_file(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path,
        tmp_path: Path) -> None:
    config = make_config()
    payload = up(config, tmp_path)
    client_file = connection_dir / f"{config['key']}.json"
    server.run(f"kill {remote_state(server, config['key'])['pid']}")
    wait_for(lambda: not alive(payload["keeper_pid"]), 5 * WATCHDOG + 3, "the keeper to exit")
    assert not client_file.exists()
    assert not (connection_dir / f"{config['key']}.keeper.lock").exists()
    assert "has exited" in Path(payload["keeper_log"]).read_text()


def test_lost_server_makes_keeper_give_up_cleanly(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path,
        tmp_path: Path) -> None:
    """With a reconnect_timeout (without one, the keeper keeps trying: tests/test_links.py)."""
    config = make_config(reconnect_timeout=GIVE_UP)
    payload = up(config, tmp_path)
    server.stop()  # also drops the keeper's connection; the service itself survives
    try:
        wait_for(lambda: not alive(payload["keeper_pid"]), GIVE_UP + 20, "the keeper to give up")
    finally:
        server.start()
    assert not (connection_dir / f"{config['key']}.json").exists()
    assert not (connection_dir / f"{config['key']}.keeper.lock").exists()
    log = Path(payload["keeper_log"]).read_text()
    assert "reconnect failed" in log and f"not restored (reconnect_timeout {GIVE_UP} s passed)" in log


def test_keeper_reconnects_after_silent_link_loss(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path,
        tmp_path: Path) -> None:
    if not server.netns:
        pytest.skip("cutting the link needs the harness's network namespace")
    config = make_config()
    payload = up(config, tmp_path)
    log = Path(payload["keeper_log"])
    server.set_link(False)  # packets vanish: only the watchdog's own deadline notices
    try:
        wait_for(lambda: "lost" in log.read_text(), 25, "the keeper to notice the dead link")
    finally:
        server.set_link(True)
    wait_for(lambda: "reconnected" in log.read_text(), 30, "the keeper to reconnect")
    assert get(payload["port"]) == b"ok\n"  # same local port, new SSH connection
    assert keeper_processes(str(connection_dir)) == [payload["keeper_pid"]]


# ---------------------------------------------------------------- no leaks, no duplicates

def test_lost_client_file_reuses_live_keeper(server: SSHServer, make_config: Callable[..., dict[str, Any]],
                                             connection_dir: Path, tmp_path: Path) -> None:
    config = make_config()
    first = up(config, tmp_path)
    state = remote_state(server, config["key"])
    logins = server.log_text().count("Accepted publickey")
    (connection_dir / f"{config['key']}.json").unlink()
    assert up(config, tmp_path) == first
    assert remote_state(server, config["key"]) == state  # the same service, not relaunched
    assert keeper_processes(str(connection_dir)) == [first["keeper_pid"]]
    assert server.log_text().count("Accepted publickey") == logins  # reused without even connecting


def test_killed_keeper_is_replaced_without_relaunching_service(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path,
        tmp_path: Path) -> None:
    config = make_config()
    first = up(config, tmp_path)
    state = remote_state(server, config["key"])
    os.kill(first["keeper_pid"], SIGKILL)
    wait_for(lambda: not alive(first["keeper_pid"]), 5, "the keeper to die")
    second = up(config, tmp_path)
    assert second["keeper_pid"] != first["keeper_pid"]
    assert second["port"] == first["port"]  # taken again: clients may hold it
    assert remote_state(server, config["key"])["pid"] == state["pid"]
    assert get(second["port"]) == b"ok\n"
    assert keeper_processes(str(connection_dir)) == [second["keeper_pid"]]


def test_keeper_of_a_replaced_service_is_stopped(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path,
        tmp_path: Path) -> None:
    config = make_config(watchdog_interval=60)  # the old keeper would not notice by itself in time
    first = up(config, tmp_path)
    old_service = remote_state(server, config["key"])["pid"]
    server.run(f"kill -s KILL -- -{old_service}")
    second = up(config, tmp_path)
    assert remote_state(server, config["key"])["pid"] != old_service
    assert not alive(first["keeper_pid"])
    assert keeper_processes(str(connection_dir)) == [second["keeper_pid"]]
    assert get(second["port"]) == b"ok\n"


def test_concurrent_runs_start_one_keeper(server: SSHServer, make_config: Callable[..., dict[str, Any]],
                                          connection_dir: Path, tmp_path: Path) -> None:
    config = make_config(args="--ready-delay 1")
    results: list[subprocess.CompletedProcess[str]] = []
    runs = [threading.Thread(target=lambda i=i: results.append(cli(config, tmp_path / f"run{i}")))
            for i in range(3)]
    for i, thread in enumerate(runs):
        (tmp_path / f"run{i}").mkdir()
        thread.start()
    for thread in runs:
        thread.join()
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    payloads = [json.loads(r.stdout) for r in results]
    assert payloads[0] == payloads[1] == payloads[2]
    assert keeper_processes(str(connection_dir)) == [payloads[0]["keeper_pid"]]


# ---------------------------------------------------------------- Python API, stop, prompts

def test_api_run_leaves_a_keeper_that_stop_keeper_ends(
        server: SSHServer, make_config: Callable[..., dict[str, Any]], connection_dir: Path) -> None:
    config = make_config()
    payload = run(config)
    assert payload["keeper_pid"] != os.getpid() and alive(payload["keeper_pid"])
    assert get(payload["port"]) == b"ok\n"
    assert stop_keeper(config["key"], connection_dir) == payload["keeper_pid"]
    assert not alive(payload["keeper_pid"])
    assert not (connection_dir / f"{config['key']}.json").exists()
    assert stop_keeper(config["key"], connection_dir) is None


class Terminal:
    """The CLI run on a fresh pty that is its controlling terminal; `screen` is all it showed."""

    def __init__(self, config_path: Path) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-c", TAKE_TERMINAL_AND_RUN, str(config_path), "--json"],
                                     stdin=slave, stdout=subprocess.PIPE, stderr=slave, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": python_path(ROOT)})
        os.close(slave)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=read_terminal, args=(self.master, self.chunks), daemon=True)
        self.reader.start()

    @property
    def screen(self) -> bytes:
        return b"".join(self.chunks)

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def finish(self) -> bytes:
        """Wait for the CLI; its stdout. The reader ends once no process holds the terminal."""
        out, _ = self.proc.communicate(timeout=60)
        self.reader.join(10)
        return out

    def close(self) -> None:
        self.proc.kill()
        os.close(self.master)


@pytest.fixture
def password_config(server: SSHServer, make_config: Callable[..., dict[str, Any]], client_home: Path,
                    tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A config whose login needs the account's password (no keys offered)."""
    (client_home / ".ssh" / "config").unlink()
    server.write_ssh_config(client_home, ALIAS, {"IdentityFile": "none", "PreferredAuthentications": "password"})
    config = make_config()
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return config, path


def test_password_prompt_on_the_terminal_is_not_echoed(
        server: SSHServer, password_config: tuple[dict[str, Any], Path]) -> None:
    """The keeper has no controlling terminal, yet asks on the user's terminal with echo off."""
    logins = server.log_text().count("Accepted password")
    terminal = Terminal(password_config[1])
    try:
        wait_for(lambda: b"password: " in terminal.screen, 30, "the password prompt")
        before, _, _ = terminal.screen.partition(b"password: ")
        live, _, line = before.rpartition(b"\r")  # the question starts at column 0 ...
        erased = live.rpartition(b"\r")[2]
        assert b" s)" in live and erased and not erased.strip(), before  # ... of the live line, blanked first
        assert line == f"{server.user}@{server.host}'s ".encode(), before  # it names user@host
        terminal.type(server.password.encode() + b"\n")
        out = terminal.finish()
    finally:
        terminal.close()
    assert terminal.proc.returncode == 0, terminal.screen
    assert b"ready:" in terminal.screen and server.password.encode() not in terminal.screen
    assert server.log_text().count("Accepted password") == logins + 1  # one login, by the keeper
    assert get(json.loads(out)["port"]) == b"ok\n"


def test_ctrl_c_at_the_prompt_leaves_nothing_behind(
        server: SSHServer, password_config: tuple[dict[str, Any], Path], connection_dir: Path) -> None:
    from tests.posix import termios

    config, path = password_config
    terminal = Terminal(path)
    try:
        wait_for(lambda: b"password: " in terminal.screen, 30, "the password prompt")
        terminal.type(b"\x03")  # ^C: SIGINT for the foreground command, not the keeper in its own session
        terminal.finish()
        assert termios.tcgetattr(terminal.master)[3] & termios.ECHO  # echo is back on
    finally:
        terminal.close()
    assert terminal.proc.returncode == 130, terminal.screen
    assert b"error: interrupted" in terminal.screen
    assert keeper_processes(str(connection_dir)) == []
    assert [p.name for p in connection_dir.iterdir()] == [f"{config['key']}.keeper.log"]  # no lock, no config copy


def test_stop_command_ends_keeper_and_service(server: SSHServer, make_config: Callable[..., dict[str, Any]],
                                              connection_dir: Path, tmp_path: Path) -> None:
    config = make_config()
    payload = up(config, tmp_path)
    service = remote_state(server, config["key"])["pid"]
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", "stop", str(tmp_path / "config.yaml")],
                            env={**os.environ, "PYTHONPATH": python_path(ROOT)}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert not alive(payload["keeper_pid"])
    wait_for(lambda: server.run(f"kill -0 {service}").returncode != 0, 10, "the service to be reaped")
    assert list(connection_dir.iterdir()) == []  # nor the keeper's log ('stop --keep-log' keeps it)


def test_a_keeper_error_comes_back_as_the_same_class_with_its_fields(
        make_config: Callable[..., dict[str, Any]], connection_dir: Path) -> None:
    """The login happens in the keeper process; its error is rebuilt in the caller, not flattened."""
    config = make_config(ssh_hostname=f"nosuchuser@{ALIAS}")
    with pytest.raises(AuthenticationError) as caught:
        run(config)
    error = caught.value
    assert (error.key, error.host, error.step) == (config["key"], ALIAS, "auth")
    assert str(error).startswith(f"ssh {ALIAS} (") and "authentication failed" in str(error)
    assert keeper_processes(str(connection_dir)) == []
    assert not (connection_dir / f"{config['key']}.json").exists()


def test_status_says_when_the_tunnel_is_down(make_config: Callable[..., dict[str, Any]], connection_dir: Path,
                                             tmp_path: Path) -> None:
    """The service runs, but its keeper died: `status` says the tunnel is down, how to restore it, and exits 4."""
    config = make_config()
    payload = up(config, tmp_path)
    status = [sys.executable, "-m", "remote_http_launcher", "status", str(tmp_path / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": python_path(ROOT)}
    healthy = subprocess.run(status, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env)
    assert healthy.returncode == 0 and "tunnel keeper pid" in healthy.stdout
    os.kill(payload["keeper_pid"], SIGKILL)
    for _ in range(100):
        if payload["keeper_pid"] not in keeper_processes(str(connection_dir)):
            break
        time.sleep(0.05)
    down = subprocess.run(status, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env)
    assert down.returncode == 4, down.stdout + down.stderr
    assert "running" in down.stdout.splitlines()[0]
    assert "tunnel        down: no tunnel keeper serves it" in down.stdout
    assert "restore the tunnel with 'remote-http-launcher CONFIG'" in down.stdout
    assert up(config, tmp_path)["keeper_pid"] != payload["keeper_pid"]  # and that restores it

