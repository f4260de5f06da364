"""SSH mode against real OpenSSH servers (tests/sshd.py): paramiko only, never the `ssh` binary.

Each test gets its own client HOME (so ~/.ssh/config and known_hosts are its
own) and REMOTE_HTTP_LAUNCHER_DIR; the server side is the session's test
user, whose services and state are wiped after every test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import AuthenticationError, HandshakeError, HostKeyError, LaunchError, handshake, run, scripts
from remote_http_launcher.config import Handshake
from remote_http_launcher.hosts.ssh import SSHHost
from remote_http_launcher.sshconnect import connect

if TYPE_CHECKING:
    from tests.sshd import SSHServer

ROOT = Path(__file__).resolve().parent.parent
DEMO_SERVICE = ROOT / "examples" / "demo_service.py"
ALIAS = "testhost"
REMOTE_STATE = ".remote-http-launcher/server"
HEALTHCHECK = Handshake(path="healthcheck")

# Kills what the launcher started on the server (by the PIDs in its status files), then wipes the state.
CLEANUP = r"""
for f in "$HOME/.remote-http-launcher/server/"*.json; do
  [ -f "$f" ] || continue
  pid=$(sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' "$f")
  [ -n "$pid" ] && { kill -9 -- "-$pid" 2>/dev/null; kill -9 "$pid" 2>/dev/null; }
done
rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work" "$HOME/miniforge3"
exit 0
"""


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def remote_demo(sshd: SSHServer) -> str:
    """The demo service in the test user's home (it cannot read /work), copied over SFTP."""
    client = sshd.connect()
    try:
        target = f"{sshd.home}/demo_service.py"
        client.open_sftp().put(str(DEMO_SERVICE), target)
    finally:
        client.close()
    return target


@pytest.fixture
def client_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh client HOME: its own ~/.ssh, and no ssh-agent from the developer's session."""
    home = tmp_path / "client-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def server(sshd: SSHServer) -> Iterator[SSHServer]:
    """The target server, cleaned (services killed, state removed) after the test."""
    yield sshd
    sshd.run(CLEANUP)


@pytest.fixture
def ssh_config(server: SSHServer, client_home: Path) -> Path:
    return server.write_ssh_config(client_home, ALIAS)


@pytest.fixture
def make_config(server: SSHServer, remote_demo: str, request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """Factory of demo-service configs for the SSH server; keyword arguments override fields.

    Direct mode by default: `hostname` is the server's address (what this
    machine connects to), `ssh_hostname` the ~/.ssh/config alias.
    """
    key = "t-" + re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]

    def make(*, args: str = "", **fields: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "workdir": "~/rhl-work",
            "hostname": server.host,
            "ssh_hostname": ALIAS,
            "network_interface": "0.0.0.0",
            "key": key,
            "command": f"{server.python} {remote_demo} --status-file {{status_file}} "
                       f"--host {{network_interface}} {args}",
            "handshake": "healthcheck",
        }
        config.update(fields)
        return config

    return make


def remote_state(server: SSHServer, key: str) -> dict[str, Any] | None:
    result = server.run(f"cat {REMOTE_STATE}/{key}.json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def remote_alive(server: SSHServer, pid: int) -> bool:
    return server.run(f"kill -0 {pid}").returncode == 0


def client_file(rhl_dir: Path, key: str) -> dict[str, Any]:
    return json.loads((rhl_dir / "client" / f"{key}.json").read_text())


def cli(config: dict[str, Any], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess whose PATH has no `ssh` (nor anything else), stdin not a terminal."""
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(empty_bin), "PYTHONPATH": str(ROOT)}
    assert subprocess.run(["sh", "-c", "command -v ssh"], env=env, capture_output=True).returncode != 0
    return subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def start_demo(server: SSHServer, remote_demo: str, interface: str) -> int:
    """Start the demo service by hand on the server (status file ~/rhl-work/s.json); its PID."""
    started = server.run(
        f"mkdir -p rhl-work && echo '{{\"status\": \"starting\"}}' > rhl-work/s.json && "
        f"{{ setsid {server.python} {remote_demo} --status-file rhl-work/s.json --host {interface} "
        f">/dev/null 2>&1 </dev/null & echo $!; }}; "
        "for i in $(seq 50); do grep -q running rhl-work/s.json && break; sleep 0.1; done")
    return int(started.stdout.split()[0])


# ---------------------------------------------------------------- SSHHost operations

def test_host_files_and_scripts(ssh_config: Path, server: SSHServer) -> None:
    with SSHHost.connect(ALIAS) as host:
        assert host.home == str(server.home)
        assert host.state_dir == f"{server.home}/{REMOTE_STATE}"
        path = f"{host.state_dir}/deep/file.json"
        assert host.read(path) is None and host.mtime(path) is None
        host.write_atomic(path, b'{"a": 1}\n')
        assert host.read(path) == b'{"a": 1}\n'
        assert host.mtime(path) is not None
        modes = server.run(f"stat -c %a {REMOTE_STATE}/deep {REMOTE_STATE}/deep/file.json").stdout.split()
        assert modes == ["700", "600"]
        assert host.listdir(f"{host.state_dir}/deep") == ["file.json"]
        assert host.listdir(f"{host.state_dir}/missing") == []

        lock = f"{host.state_dir}/other/x.lock"
        assert host.create_exclusive(lock, b"mine") is True
        assert host.create_exclusive(lock, b"theirs") is False
        assert host.read(lock) == b"mine"
        assert host.rename(lock, f"{lock}.aside") is True
        assert host.rename(lock, f"{lock}.aside") is False
        host.remove(f"{lock}.aside")
        host.remove(f"{lock}.aside")
        assert host.read(f"{lock}.aside") is None

        big = b"".join(b"line %d\n" % i for i in range(100_000))
        host.write_atomic(f"{host.state_dir}/big.log", big)
        assert host.read(f"{host.state_dir}/big.log") == big
        assert host.tail(f"{host.state_dir}/big.log", 3) == "line 99997\nline 99998\nline 99999"

        tricky = ["it's", 'a "b" $HOME `x`', "new\nline", ""]
        result = host.run_script('for a in "$@"; do printf "[%s]" "$a"; done; echo err >&2; exit 3', tricky)
        assert (result.returncode, result.stderr) == (3, "err\n")
        assert result.stdout == "".join(f"[{a}]" for a in tricky)


def test_host_process_start_time_matches_script(ssh_config: Path, server: SSHServer) -> None:
    started = server.run("setsid sleep 60 >/dev/null 2>&1 & echo $!")
    pid = int(started.stdout)
    with SSHHost.connect(ALIAS) as host:
        expected = host.run_script(scripts.PROCESS_INFO, [str(pid)]).stdout.strip()
        assert host.process_start_time(pid) == expected
        assert expected.startswith("proc:")
        assert host.process_start_time(1) is None  # root's process: not ours to signal
        server.run(f"kill -9 {pid}")
        assert host.process_start_time(pid) is None


def test_tcp_channel_works_as_socket_for_http(ssh_config: Path, server: SSHServer, remote_demo: str) -> None:
    """A service bound to the server's 127.0.0.1 answers the handshake through direct-tcpip."""
    pid = start_demo(server, remote_demo, "127.0.0.1")
    port = json.loads(server.run("cat rhl-work/s.json").stdout)["port"]
    with SSHHost.connect(ALIAS) as host:
        def factory(timeout: float) -> Any:
            return host.tcp_channel("127.0.0.1", port, timeout)

        assert handshake.check("127.0.0.1", port, HEALTHCHECK, factory) is None
        assert handshake.get_status("127.0.0.1", port, "/nope", factory) == 404
        with pytest.raises(ConnectionRefusedError):
            host.tcp_channel("127.0.0.1", 1, 5)
        assert handshake.check("127.0.0.1", 1, HEALTHCHECK, lambda t: host.tcp_channel("127.0.0.1", 1, t)) is not None
    server.run(f"kill {pid}")
