"""SSH mode against real OpenSSH servers (tests/sshd.py): paramiko only, never the `ssh` binary.

Each test gets its own client HOME (so ~/.ssh/config and known_hosts are its
own) and REMOTE_HTTP_LAUNCHER_DIR; the server side is the session's test
user, whose services and state are wiped after every test.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from remote_http_launcher import (
    AuthenticationError,
    HandshakeError,
    HostError,
    HostKeyError,
    LaunchError,
    handshake,
    prompts,
    run,
    scripts,
    statefiles,
    stop,
)
from remote_http_launcher.config import Handshake
from remote_http_launcher.handle import launch
from remote_http_launcher.hosts.ssh import SSHHost
from remote_http_launcher.launcher import VERIFY_TIMEOUT
from remote_http_launcher.service import KILL_WAIT, STOP_TIMEOUT
from remote_http_launcher.ssh.connection import connect
from tests.conftest import ROOT
from tests.posix import python_path
from tests.ssh_client import ALIAS, RELAY, REMOTE_STATE, demo_config, node_key, remote_state, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import SSHServer

KILL_DELIVERY = 10.0  # seconds a SIGKILLed process may take to be gone on a loaded machine
HEALTHCHECK = Handshake(path="healthcheck")

# Kills what the launcher started on the server (by the PIDs in its status files), then wipes the state.
CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work" "$HOME/miniforge3"')


# ---------------------------------------------------------------- fixtures (client HOME: conftest.py)

@pytest.fixture
def server(sshd: SSHServer) -> Iterator[SSHServer]:
    """The target server, cleaned (services killed, state removed) after the test."""
    yield sshd
    sshd.run(CLEANUP)


@pytest.fixture
def make_config(server: SSHServer, remote_demo: str, request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """Factory of demo-service configs for the SSH server (direct mode); keyword arguments override fields."""
    return partial(demo_config, server, remote_demo, node_key("t-", request.node.name))


def remote_alive(server: SSHServer, pid: int) -> bool:
    return server.run(f"kill -0 {pid}").returncode == 0


def client_file(rhl_dir: Path, key: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((rhl_dir / "client" / f"{key}.json").read_text())
    return payload


def cli(config: dict[str, Any], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess whose PATH has no `ssh` (nor anything else), stdin not a terminal."""
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(empty_bin), "PYTHONPATH": python_path(ROOT)}
    assert shutil.which("ssh", path=env["PATH"]) is None
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


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error: exactly one line, the last on stderr (progress lines may precede it)."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


# ---------------------------------------------------------------- SSHHost operations

@pytest.mark.parametrize("kept_shells", [False, True], ids=["channels", "kept-shells"])
def test_host_files_and_scripts(ssh_config: Path, server: SSHServer, kept_shells: bool) -> None:
    ssh_host = SSHHost.connect(ALIAS)
    if kept_shells:  # the broker's: scripts and reads in kept `sh` sessions (ssh/shells.py)
        ssh_host.keep_shells()
    with ssh_host as host:
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
        assert host.read_from(f"{host.state_dir}/big.log", 0) == (big, len(big))  # a log: whole
        assert host.read(f"{host.state_dir}/big.log") == big[:statefiles.READ_LIMIT]  # a state file: capped
        host.write_atomic(f"{host.state_dir}/medium.json", big[:100_000])  # several chunks, under the cap
        assert host.read(f"{host.state_dir}/medium.json") == big[:100_000]
        assert host.tail(f"{host.state_dir}/big.log", 3) == "line 99997\nline 99998\nline 99999"

        tricky = ["it's", 'a "b" $HOME `x`', "new\nline", ""]
        result = host.run_script('for a in "$@"; do printf "[%s]" "$a"; done; echo err >&2; exit 3', tricky)
        assert (result.returncode, result.stderr) == (3, "err\n")
        assert result.stdout == "".join(f"[{a}]" for a in tricky)


@pytest.mark.parametrize("kept_shells", [False, True], ids=["sftp", "kept-shells"])
def test_host_process_start_time_matches_script(ssh_config: Path, server: SSHServer, kept_shells: bool) -> None:
    started = server.run("setsid sleep 60 >/dev/null 2>&1 & echo $!")
    pid = int(started.stdout)
    ssh_host = SSHHost.connect(ALIAS)
    if kept_shells:
        ssh_host.keep_shells()
    with ssh_host as host:
        expected = host.run_script(scripts.program("process_info"), [str(pid)]).stdout.strip()
        assert host.process_start_time(pid) == expected
        assert expected.startswith("proc:")
        assert host.process_start_time(1) is None  # root's process: not ours to signal
        server.run(f"kill -9 {pid}")
        # SIGKILL is delivered when the process is next scheduled (late on a loaded machine): wait for it.
        deadline = time.monotonic() + KILL_DELIVERY
        while host.process_start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
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


# ---------------------------------------------------------------- the launcher over SSH

def test_launch_then_reconnect_without_relaunch(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                make_config: Callable[..., dict[str, Any]]) -> None:
    config = make_config()
    payload = run(config)
    state = remote_state(server, config["key"])
    assert state is not None and state["status"] == "running" and remote_alive(server, state["pid"])
    assert payload == {"hostname": server.host, "port": state["port"], "ssh_hostname": ALIAS}
    assert client_file(rhl_dir, config["key"]) == payload  # direct mode: the client connects itself
    assert handshake.check(server.host, state["port"], HEALTHCHECK) is None

    (rhl_dir / "client" / f"{config['key']}.json").unlink()  # forces the SSH path: read state, verify
    assert run(config) == payload
    assert remote_state(server, config["key"]) == state  # same PID, same launch: nothing restarted


@pytest.mark.parametrize("persist", [0, 60], ids=["own-login", "broker"])
def test_a_reconnect_whose_own_handshake_passes_checks_nothing_more_on_the_server(
        persist: int, ssh_config: Path, server: SSHServer, rhl_dir: Path,
        make_config: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Direct mode: the client's handshake is the configured check of the same port, so the server's own
    (a direct-tcpip channel: two more round trips) is not made; a PID-reused record still is not trusted."""
    from remote_http_launcher.broker.client import BrokeredHost

    config = make_config(connection_persist=persist)
    payload = run(config)
    state = remote_state(server, config["key"])
    assert state is not None and state["start_time"]
    channels: list[tuple[str, int]] = []
    for kind in (SSHHost, BrokeredHost):  # the channel requests of this process: its login's, or the broker's
        def counted(host: Any, address: str, port: int, timeout: float, real: Any = kind.tcp_channel) -> Any:
            channels.append((address, port))
            return real(host, address, port, timeout)

        monkeypatch.setattr(kind, "tcp_channel", counted)
    (rhl_dir / "client" / f"{config['key']}.json").unlink()
    assert run(config) == payload
    assert remote_state(server, config["key"]) == state and channels == []

    # The same live PID and answering port, another start time (the PID was reused): launched anew.
    path = f"{REMOTE_STATE}/{config['key']}.json"
    server.run(f"printf %s {shlex.quote(json.dumps({**state, 'start_time': 'proc:1'}))} > {path}")
    (rhl_dir / "client" / f"{config['key']}.json").unlink()
    relaunched = run(config)
    new = remote_state(server, config["key"])
    assert new is not None and new["pid"] != state["pid"] and relaunched["port"] == new["port"]
    assert remote_alive(server, new["pid"])


def test_a_cold_launch_reads_the_status_file_from_the_launch_scripts_answer(
        ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Callable[..., dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """launch.sh waits on the server for the new service's record and prints it after the PID: a service
    that reports within that wait costs the launcher no read of the status file (two round trips each)."""
    config = make_config(connection_persist=0)
    reads: list[str] = []

    def counted(host: SSHHost, path: str, real: Any = SSHHost.read) -> bytes | None:
        reads.append(path)
        return cast(bytes | None, real(host, path))

    monkeypatch.setattr(SSHHost, "read", counted)
    payload = run(config)
    state = remote_state(server, config["key"])
    assert state is not None and state["status"] == "running" and payload["port"] == state["port"]
    assert [path for path in reads if path.endswith(f"/{config['key']}.json")] == []


def test_a_cold_launch_over_a_slow_link_takes_its_round_trips(
        server: SSHServer, client_home: Path, rhl_dir: Path, make_config: Callable[..., dict[str, Any]]) -> None:
    """As the proxy counts them: login 5, SFTP 3 (channel, subsystem, home and status file), the lock 2, the
    launch 2 (its exec channel opened while the lock is taken: 16 in all when opened after it), the check of
    the process 2; no read of the status file (launch.sh printed it)."""
    from tests.linkproxy import LinkProxy, through

    with LinkProxy((server.host, server.port), rtt=0.05) as proxy:
        server.write_ssh_config(client_home, ALIAS, through(proxy, server))
        config = make_config(connection_persist=0)
        run(config)
        (rhl_dir / "client" / f"{config['key']}.json").unlink()
        server.run(stop_services_script(f'rm -f {REMOTE_STATE}/*.json {REMOTE_STATE}/*.lock'))
        proxy.reset()
        run(config)
        time.sleep(0.2)  # the proxy counts the last bytes asynchronously
        assert proxy.counters.round_trips() <= 15  # the connection's close may count as one more


def test_a_service_that_stopped_answering_is_relaunched_on_reconnect(
        ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Callable[..., dict[str, Any]]) -> None:
    """Stopped (SIGSTOP): its PID is the recorded one and its port takes connections, but nothing answers
    there. This machine's handshake times out, then the server's is made, within the time the two had side by
    side (not a second full timeout); stopping it takes STOP_TIMEOUT (SIGTERM waits while it is stopped), then
    SIGKILL."""
    config = make_config()
    run(config)
    old = remote_state(server, config["key"])
    assert old is not None
    server.run(f"kill -s STOP {old['pid']}")
    (rhl_dir / "client" / f"{config['key']}.json").unlink()
    started = time.monotonic()
    payload = run(config)
    elapsed = time.monotonic() - started
    new = remote_state(server, config["key"])
    assert new is not None and new["pid"] != old["pid"] and payload["port"] == new["port"]
    assert elapsed < VERIFY_TIMEOUT + STOP_TIMEOUT + KILL_WAIT, elapsed


def test_cli_launches_over_ssh_without_ssh_binary(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                  make_config: Callable[..., dict[str, Any]],
                                                  tmp_path: Path) -> None:
    config = make_config()
    first = cli(config, tmp_path, "--json")
    assert first.returncode == 0, first.stderr
    state = remote_state(server, config["key"])
    assert state is not None and remote_alive(server, state["pid"])
    assert json.loads(first.stdout)["port"] == state["port"]
    (rhl_dir / "client" / f"{config['key']}.json").unlink()
    second = cli(config, tmp_path, "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert remote_state(server, config["key"]) == state


def test_stale_remote_state_is_replaced(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                        make_config: Callable[..., dict[str, Any]]) -> None:
    config = make_config()
    dead = int(server.run("sh -c 'echo $$'").stdout)  # a PID that has exited
    server.run(f"mkdir -p {REMOTE_STATE} && echo '{{\"status\": \"running\", \"pid\": {dead}, \"port\": 1}}' "
               f"> {REMOTE_STATE}/{config['key']}.json")
    payload = run(config)
    state = remote_state(server, config["key"])
    assert state is not None and state["pid"] != dead and state["port"] == payload["port"] != 1
    assert remote_alive(server, state["pid"])


def test_relaunch_after_the_service_was_killed(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                               make_config: Callable[..., dict[str, Any]]) -> None:
    config = make_config()
    run(config)
    old = remote_state(server, config["key"])
    assert old is not None
    server.run(f"kill -s KILL -- -{old['pid']}")
    payload = run(config)  # the client file is stale now: its port no longer answers
    new = remote_state(server, config["key"])
    assert new is not None and new["pid"] != old["pid"] and remote_alive(server, new["pid"])
    assert client_file(rhl_dir, config["key"])["port"] == new["port"] == payload["port"]


def test_workdir_with_spaces_and_quotes(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                        make_config: Callable[..., dict[str, Any]]) -> None:
    workdir = "~/rhl-work/it's a \"quoted\" $dir"
    config = make_config(workdir=workdir)
    run(config)
    state = remote_state(server, config["key"])
    assert state is not None
    expected = f"{server.home}/rhl-work/it's a \"quoted\" $dir"
    assert state["workdir"] == expected
    assert server.run(f"readlink /proc/{state['pid']}/cwd").stdout.strip() == expected


@pytest.mark.parametrize("hops", ["jump", "jump,jump"])
def test_proxyjump(hops: str, server: SSHServer, jump_sshd: SSHServer, client_home: Path, rhl_dir: Path,
                   make_config: Callable[..., dict[str, Any]]) -> None:
    jump_sshd.write_ssh_config(client_home, "jump")
    server.write_ssh_config(client_home, ALIAS, {"ProxyJump": hops})
    logins_before = jump_sshd.log_text().count("Accepted publickey")
    config = make_config()
    run(config)
    state = remote_state(server, config["key"])
    assert state is not None and remote_alive(server, state["pid"])
    assert jump_sshd.log_text().count("Accepted publickey") - logins_before == hops.count("jump")


def test_proxycommand(server: SSHServer, client_home: Path, tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    server.write_ssh_config(client_home, ALIAS, {"ProxyCommand": f"{sys.executable} {relay} %h %p"})
    with SSHHost.connect(ALIAS) as host:
        assert host.run_script("id -un", []).stdout.strip() == server.user




def test_unknown_host_key_without_terminal_is_refused(server: SSHServer, client_home: Path, rhl_dir: Path,
                                                      make_config: Callable[..., dict[str, Any]],
                                                      tmp_path: Path) -> None:
    server.write_ssh_config(client_home, ALIAS, {"StrictHostKeyChecking": "ask"})
    (client_home / ".ssh" / "known_hosts").write_text("")
    config = make_config()
    result = cli(config, tmp_path)
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(f"error: ssh {ALIAS} ({server.host}:{server.port}): host key: unknown ED25519 key SHA256:")
    name = f"[{server.host}]:{server.port}"
    assert line.endswith(f"if that is the server's fingerprint, run again with --accept-new-host-key to record it "
                         f"in ~/.ssh/known_hosts as {name}"), line
    for call in (run, launch):  # the advice names the call the user made
        with pytest.raises(HostKeyError) as info:
            call(config)
        assert str(info.value).endswith(f"run again with {call.__name__}(..., accept_new_host_key=True) to record it "
                                        f"in ~/.ssh/known_hosts as {name}"), info.value
    assert (client_home / ".ssh" / "known_hosts").read_text() == ""
    assert remote_state(server, config["key"]) is None  # nothing launched
    assert not (rhl_dir / "client" / f"{config['key']}.json").exists()


def test_accept_new_records_unknown_key(server: SSHServer, client_home: Path, rhl_dir: Path,
                                        make_config: Callable[..., dict[str, Any]]) -> None:
    server.write_ssh_config(client_home, ALIAS, {"StrictHostKeyChecking": "accept-new"})
    known_hosts = client_home / ".ssh" / "known_hosts"
    known_hosts.unlink()
    run(make_config(connection_persist=0))  # logged in here: a broker would read /etc/ssh/ssh_config (hashing)
    assert known_hosts.read_text().splitlines() == [server.host_key_line]
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert (client_home / ".ssh").stat().st_mode & 0o777 == 0o700


def test_accept_new_host_key_records_the_key_under_its_host_key_alias(
        server: SSHServer, client_home: Path, rhl_dir: Path, make_config: Callable[..., dict[str, Any]],
        tmp_path: Path) -> None:
    """ssh-keyscan would name the key [host]:port, which a HostKeyAlias never looks up: the flag records it
    under the name OpenSSH looks up, over StrictHostKeyChecking yes, as `ssh -o` would."""
    server.write_ssh_config(client_home, ALIAS, {"HostKeyAlias": "cluster-login"})
    known_hosts = client_home / ".ssh" / "known_hosts"
    known_hosts.write_text("")
    config = make_config()
    refused = cli(config, tmp_path)
    assert refused.returncode == 1 and error_line(refused).endswith(" as cluster-login"), refused.stderr
    accepted = cli(config, tmp_path, "--accept-new-host-key")
    assert accepted.returncode == 0, accepted.stderr
    assert recorded(known_hosts, "cluster-login") == [server.host_pubkey]  # hashed or not, as ssh_config says
    (rhl_dir / "client" / f"{config['key']}.json").unlink()  # the next run logs in again: the key is known now
    assert cli(config, tmp_path).returncode == 0


def test_every_command_that_connects_takes_accept_new_host_key(server: SSHServer, client_home: Path,
                                                                rhl_dir: Path) -> None:
    """The advice names the flag whatever the command was: `list --host` may be the first contact."""
    server.write_ssh_config(client_home, ALIAS)
    known_hosts = client_home / ".ssh" / "known_hosts"
    known_hosts.write_text("")

    def listing(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "remote_http_launcher", "list", "--host", ALIAS, *args],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    refused = listing()
    assert refused.returncode == 1 and "--accept-new-host-key" in error_line(refused)
    accepted = listing("--accept-new-host-key")
    assert accepted.returncode == 0, accepted.stderr
    assert recorded(known_hosts, f"[{server.host}]:{server.port}") == [server.host_pubkey]


def test_accept_new_host_key_reaches_the_tunnel_keeper_and_never_accepts_a_changed_key(
        server: SSHServer, client_home: Path, rhl_dir: Path, make_config: Callable[..., dict[str, Any]]) -> None:
    server.write_ssh_config(client_home, ALIAS)
    known_hosts = client_home / ".ssh" / "known_hosts"
    name = server.host_key_line.split()[0]
    known_hosts.write_text(f"{name} ssh-ed25519 {_other_ed25519()}\n")
    config = make_config(tunnel=True, network_interface="127.0.0.1")
    with pytest.raises(HostKeyError, match="HAS CHANGED"):
        run(config, accept_new_host_key=True)
    assert remote_state(server, config["key"]) is None
    known_hosts.write_text("")
    payload = run(config, accept_new_host_key=True)  # the keeper logs in: the flag travels to it
    assert "keeper_pid" in payload and recorded(known_hosts, name) == [server.host_pubkey]


def recorded(known_hosts: Path, name: str) -> list[Any]:
    """The keys known_hosts holds for `name` (its lines may name it hashed)."""
    import paramiko

    keys = paramiko.HostKeys(str(known_hosts))
    assert len(known_hosts.read_text().splitlines()) == len(keys.keys())  # nothing recorded under another name
    return list((keys.lookup(name) or {}).values())


@pytest.mark.parametrize("strict", ["yes", "no"])
def test_changed_host_key_is_refused(strict: str, server: SSHServer, client_home: Path, rhl_dir: Path,
                                     make_config: Callable[..., dict[str, Any]]) -> None:
    import paramiko

    server.write_ssh_config(client_home, ALIAS, {"StrictHostKeyChecking": strict})
    other = paramiko.RSAKey.generate(1024)
    name = server.host_key_line.split()[0]
    (client_home / ".ssh" / "known_hosts").write_text(f"{name} ssh-ed25519 {_other_ed25519()}\n"
                                                      f"{name} {other.get_name()} {other.get_base64()}\n")
    config = make_config()
    with pytest.raises(HostKeyError, match=rf"HOST KEY FOR {re.escape(name)} HAS CHANGED.*ssh-keygen -R"):
        run(config)
    assert remote_state(server, config["key"]) is None


def _other_ed25519() -> str:
    """The base64 of an ed25519 public key that is not the server's."""
    import base64

    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
    return base64.b64encode(blob).decode()


@pytest.mark.parametrize("how", ["fail-flag", "command-exits"])
def test_failing_service_reports_its_log(how: str, ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                         make_config: Callable[..., dict[str, Any]]) -> None:
    if how == "fail-flag":
        config = make_config(args="--fail")
        expected = r"reported status 'failed'; last 2 lines of its log:\n.*\n  demo service: failing on purpose$"
    else:
        config = make_config(command="echo about to fail; exit 3")
        expected = r"exited before reporting its port; log: about to fail"
    with pytest.raises(LaunchError, match=expected) as caught:
        run(config)
    assert ALIAS in str(caught.value)
    assert not (rhl_dir / "client" / f"{config['key']}.json").exists()


def test_service_on_server_loopback_is_checked_through_ssh(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                           make_config: Callable[..., dict[str, Any]]) -> None:
    """The port check runs over direct-tcpip; only the client's own final check can fail."""
    config = make_config(network_interface="127.0.0.1")
    with pytest.raises(HandshakeError, match=rf"the service runs on {ALIAS}, but from this machine"):
        run(config)
    state = remote_state(server, config["key"])
    assert state is not None and state["status"] == "running" and remote_alive(server, state["pid"])
    if server.netns:  # 127.0.0.1 "on the server" is a different machine's loopback
        assert handshake.check(server.host, state["port"], HEALTHCHECK, timeout=2) is not None
    with SSHHost.connect(ALIAS) as host:
        factory = lambda t: host.tcp_channel("127.0.0.1", state["port"], t)  # noqa: E731
        assert handshake.check("127.0.0.1", state["port"], HEALTHCHECK, factory) is None


# ---------------------------------------------------------------- host keys in detail

def _host_key_entry(server: SSHServer) -> tuple[str, str, str]:
    name, key_type, key_b64 = server.host_key_line.split()
    return name, key_type, key_b64


@pytest.mark.parametrize("variant", ["hashed", "second-file", "alias"])
def test_known_hosts_variants(variant: str, server: SSHServer, client_home: Path) -> None:
    import paramiko

    name, key_type, key_b64 = _host_key_entry(server)
    extra_known = client_home / "more_known_hosts"
    main_known = client_home / ".ssh" / "known_hosts"
    options = {"UserKnownHostsFile": f"{main_known} {extra_known}"}
    if variant == "alias":
        options["HostKeyAlias"] = "my-alias"
    server.write_ssh_config(client_home, ALIAS, options)
    lines = {"hashed": f"{paramiko.HostKeys.hash_host(name)} {key_type} {key_b64}\n",
             "second-file": f"{name} {key_type} {key_b64}\n",
             "alias": f"my-alias {key_type} {key_b64}\n"}
    main_known.write_text("" if variant == "second-file" else lines[variant])
    extra_known.write_text(lines[variant] if variant == "second-file" else "")
    connection = connect(ALIAS, interactive=False)
    try:
        assert connection.transport.is_authenticated()
    finally:
        connection.close()


@pytest.mark.parametrize("answer", ["yes", "no"])
def test_unknown_host_key_asks_on_a_terminal(answer: str, server: SSHServer, client_home: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import io

    server.write_ssh_config(client_home, ALIAS, {"StrictHostKeyChecking": "ask"})
    known_hosts = client_home / ".ssh" / "known_hosts"
    known_hosts.write_text("")
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer + "\n"))
    fingerprint = server.host_pubkey.fingerprint
    if answer == "yes":
        connect(ALIAS, prompt=prompts.terminal).close()
        assert known_hosts.read_text().splitlines() == [server.host_key_line]
    else:
        with pytest.raises(HostKeyError, match="not accepted"):
            connect(ALIAS, prompt=prompts.terminal)
        assert known_hosts.read_text() == ""
    prompt = capsys.readouterr().err
    assert f"ED25519 key fingerprint is {fingerprint}." in prompt
    assert f"continue connecting to {server.user}@{server.host} (yes/no/[fingerprint])? " in prompt


def test_strict_yes_refuses_unknown_key_even_on_a_terminal(server: SSHServer, client_home: Path) -> None:
    server.write_ssh_config(client_home, ALIAS)  # StrictHostKeyChecking yes
    (client_home / ".ssh" / "known_hosts").write_text("")
    with pytest.raises(HostKeyError, match=r"\(StrictHostKeyChecking is yes\); if that is the server.s fingerprint, "
                       r"run again with --accept-new-host-key"):
        connect(ALIAS, prompt=prompts.terminal)


# ---------------------------------------------------------------- authentication

def _write_key(path: Path, source: Path | None = None, passphrase: bytes | None = None) -> Path:
    """An OpenSSH private key file: a copy of `source` (re-encrypted), or a fresh unauthorized key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key: Any = (serialization.load_ssh_private_key(source.read_bytes(), None) if source
                else Ed25519PrivateKey.generate())
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    Path(f"{path}.pub").write_bytes(public + b"\n")
    return path


def test_auth_failure_without_terminal_is_one_line(server: SSHServer, client_home: Path, rhl_dir: Path,
                                                   make_config: Callable[..., dict[str, Any]],
                                                   tmp_path: Path) -> None:
    wrong = _write_key(client_home / ".ssh" / "wrong_key")
    server.write_ssh_config(client_home, ALIAS, {"IdentityFile": str(wrong)})
    config = make_config()
    result = cli(config, tmp_path)
    assert result.returncode == 1
    assert error_line(result) == (
        f"error: ssh {ALIAS} ({server.host}:{server.port}): auth: authentication failed as "
        f"{server.user}@{server.host} (tried: agent (0 keys), "
        "~/.ssh/wrong_key, keyboard-interactive skipped: no way to ask, password skipped: no way to ask); to "
        "answer password or code prompts, run it on a terminal, or pass prompt= to run() (a function "
        "(text, secret) -> answer)")
    assert server.password not in result.stderr
    assert remote_state(server, config["key"]) is None


def test_encrypted_key_needs_a_way_to_ask(server: SSHServer, client_home: Path) -> None:
    key = _write_key(client_home / ".ssh" / "id_ed25519", server.client_key, b"secret phrase")
    server.write_ssh_config(client_home, ALIAS, {"IdentityFile": str(key)})
    with pytest.raises(AuthenticationError) as caught:
        connect(ALIAS)  # pytest's stdin is no terminal, and no prompt= is given
    assert "~/.ssh/id_ed25519 (encrypted, skipped: no way to ask for the passphrase)" in str(caught.value)

    asked: list[tuple[str, bool]] = []

    def answer(text: str, secret: bool) -> str:
        asked.append((text, secret))
        return "secret phrase"

    connect(ALIAS, prompt=answer).close()
    assert asked == [(f"({server.user}@{server.host}) Enter passphrase for key '~/.ssh/id_ed25519': ", True)]


def test_password_asked_again_after_a_wrong_one(server: SSHServer, client_home: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    server.write_ssh_config(client_home, ALIAS, {"IdentityFile": "none"})
    answers = iter(["wrong password", server.password])
    asked: list[tuple[str, bool]] = []

    def answer(text: str, secret: bool) -> str:
        asked.append((text, secret))
        return next(answers)

    with SSHHost(connect(ALIAS, prompt=answer)) as host:
        assert host.run_script("id -un", []).stdout.strip() == server.user
    question = f"{server.user}@{server.host}'s password: "
    assert asked == [(question, True), (f"Permission denied, please try again.\n{question}", True)]
    assert server.password not in capsys.readouterr().err


def test_password_on_a_terminal_reads_without_echo(server: SSHServer, client_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal prompt function: a secret goes through getpass (no echo)."""
    server.write_ssh_config(client_home, ALIAS, {"IdentityFile": "none"})
    read: list[str] = []

    def fake_getpass(text: str) -> str:  # the seam: getpass reads /dev/tty
        read.append(text)
        return server.password

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    connect(ALIAS, prompt=prompts.terminal).close()
    assert read == [f"{server.user}@{server.host}'s password: "]


def test_agent_keys_come_first(server: SSHServer, client_home: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent is not installed")
    sock = tmp_path / "agent.sock"
    started = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True)
    agent_pid = int(re.search(r"SSH_AGENT_PID=(\d+)", started.stdout).group(1))  # type: ignore[union-attr]
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(server.client_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        wrong = _write_key(client_home / ".ssh" / "wrong_key")
        server.write_ssh_config(client_home, ALIAS, {"IdentityFile": str(wrong), "IdentitiesOnly": "no"})
        connect(ALIAS, interactive=False).close()
        server.write_ssh_config(client_home, "only", {"IdentityFile": str(wrong)})  # IdentitiesOnly yes
        with pytest.raises(AuthenticationError, match=r"tried: agent \(0 keys, 1 ignored: IdentitiesOnly\), "
                                                      r"~/.ssh/wrong_key,"):
            connect("only", interactive=False)
    finally:
        os.kill(agent_pid, 15)


def test_a_publickey_login_waits_for_no_service_accept(server: SSHServer, client_home: Path) -> None:
    """TCP connect, banner, key exchange, new keys, then the key's USERAUTH_REQUEST right behind the
    SERVICE_REQUEST: 5 round trips as the proxy counts them, 6 in paramiko's order (waiting for the accept)."""
    from tests.linkproxy import LinkProxy, through

    with LinkProxy((server.host, server.port), rtt=0.05) as proxy:  # packets sent together arrive together
        server.write_ssh_config(client_home, ALIAS, through(proxy, server))
        connection = connect(ALIAS, interactive=False)
        try:
            assert connection.transport.is_authenticated()
            time.sleep(0.2)  # the proxy counts the last bytes asynchronously
            assert proxy.counters.round_trips() <= 5  # a loaded machine may merge two sends into one turn
        finally:
            connection.close()


def test_connect_timeout(server: SSHServer, client_home: Path) -> None:
    if server.netns is None:
        pytest.skip("needs the network namespace to drop packets")
    server.write_ssh_config(client_home, ALIAS, {"ConnectTimeout": "1"})
    server.set_link(False)
    try:
        with pytest.raises(HostError, match=rf"^ssh {ALIAS} \({re.escape(server.host)}:{server.port}\): "
                                            r"connect: timed out after 1 s$"):
            connect(ALIAS, interactive=False)
    finally:
        server.set_link(True)


def test_connection_refused_names_host_and_step(client_home: Path) -> None:
    (client_home / ".ssh").mkdir()
    (client_home / ".ssh" / "config").write_text("Host nothing\n  HostName 127.0.0.1\n  Port 1\n")
    with pytest.raises(HostError, match=r"^ssh nothing \(127.0.0.1:1\): connect: connection refused$"):
        connect("nothing", interactive=False)


# ---------------------------------------------------------------- conda on the server

CONDA_SH = r"""
conda() {
  if [ "$1" = activate ] && [ -d "$HOME/miniforge3/envs/$2/conda-meta" ]; then
    CONDA_DEFAULT_ENV=$2; CONDA_PREFIX=$HOME/miniforge3/envs/$2; PATH=$CONDA_PREFIX/bin:$PATH
    export CONDA_DEFAULT_ENV CONDA_PREFIX PATH
  else
    echo "fake conda: cannot $*" >&2; return 1
  fi
}
"""


def test_conda_environment_on_the_server(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                         make_config: Callable[..., dict[str, Any]]) -> None:
    """LAUNCH finds ~/miniforge3 on the server, activates the env, and names host and env when missing."""
    elsewhere = server.run("command -v conda || ls -d /opt/conda /opt/miniforge3 /opt/miniconda3 /opt/anaconda3")
    if not elsewhere.stdout.strip():
        with pytest.raises(LaunchError, match=rf"conda on {ALIAS}: conda not found"):
            run(make_config(conda="myenv"))

    server.run("mkdir -p miniforge3/etc/profile.d miniforge3/envs/myenv/conda-meta miniforge3/envs/myenv/bin && "
               f"cat > miniforge3/etc/profile.d/conda.sh <<'EOF'\n{CONDA_SH}EOF\n"
               f"printf '#!/bin/sh\\nexec {server.python} \"$@\"\\n' > miniforge3/envs/myenv/bin/env-python && "
               "chmod +x miniforge3/envs/myenv/bin/env-python", check=True)
    with pytest.raises(LaunchError, match=rf"conda on {ALIAS}: conda environment 'nope' not found "
                                          rf"\(conda at {re.escape(str(server.home))}/miniforge3\)"):
        run(make_config(conda="nope"))

    config = make_config(conda="myenv")
    config["command"] = config["command"].replace(server.python, "env-python")  # only on PATH once activated
    run(config)
    state = remote_state(server, config["key"])
    assert state is not None and remote_alive(server, state["pid"])
    environ = server.run(f"tr '\\0' '\\n' < /proc/{state['pid']}/environ").stdout.splitlines()
    assert "CONDA_DEFAULT_ENV=myenv" in environ


# ---------------------------------------------------------------- robustness and the warm path

def test_login_shell_greetings_do_not_confuse_scripts(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                                      make_config: Callable[..., dict[str, Any]]) -> None:
    """A ~/.bashrc that prints (common on clusters) must not corrupt a script's output, e.g. LAUNCH's PID."""
    if not (Path("/bin/bash").exists() and shutil.which("usermod")):
        pytest.skip("needs bash and usermod")
    server.run("echo 'echo welcome to the cluster' > .bashrc", check=True)
    subprocess.run(["usermod", "-s", "/bin/bash", server.user], check=True, capture_output=True)
    try:
        client = server.connect()
        try:
            greeting = client.exec_command("echo real")[1].read()
        finally:
            client.close()
        if b"welcome" not in greeting:
            pytest.skip("this bash does not read ~/.bashrc for SSH commands")
        with SSHHost.connect(ALIAS) as host:
            assert host.run_script('echo "$1"', ["only this"]).stdout == "only this\n"
        run(make_config())
    finally:
        subprocess.run(["usermod", "-s", "/bin/sh", server.user], check=True, capture_output=True)
        server.run("rm -f .bashrc")


def test_lost_connection_is_one_line_naming_the_host(ssh_config: Path, server: SSHServer) -> None:
    host = SSHHost.connect(ALIAS)
    path = f"{host.state_dir}/x.json"
    host.transport.close()
    prefix = rf"^ssh {ALIAS} \({re.escape(server.host)}:{server.port}\): "
    with pytest.raises(HostError, match=prefix + r"exec: connection lost$"):
        host.run_script("true", [])
    with pytest.raises(HostError, match=prefix + rf"SFTP: read {re.escape(path)}: connection lost$"):
        host.read(path)
    host.close()


def test_warm_path_never_imports_paramiko(ssh_config: Path, server: SSHServer, rhl_dir: Path,
                                          make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """Importing the CLI, and reusing a live client file, stay free of paramiko."""
    config = make_config()
    run(config)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    probe = ("import sys; from remote_http_launcher.cli import main; loaded = 'paramiko' in sys.modules; "
             f"code = main([{str(path)!r}]); print(loaded, code, 'paramiko' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": python_path(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "0", "False"], result.stderr


# ---------------------------------------------------------------- ~/.ssh/config without a server

def test_config_resolution_and_host_key_names(client_home: Path) -> None:
    from remote_http_launcher.ssh.config import load_ssh_config, parse_hop, resolve

    (client_home / ".ssh").mkdir()
    (client_home / ".ssh" / "config").write_text(
        "Host cluster\n  HostName login.example.org\n  User alice\n  Port 2222\n"
        "Host plain\n  HostName 10.0.0.5\n"
        "Host aliased\n  HostKeyAlias cluster-key\n")
    config = load_ssh_config()
    cluster = resolve(config, "cluster")
    assert (cluster.hostname, cluster.port, cluster.user) == ("login.example.org", 2222, "alice")
    assert cluster.known_hosts_name == "[login.example.org]:2222"
    assert cluster.label == "ssh cluster (login.example.org:2222)"
    assert resolve(config, "cluster", user="bob").user == "bob"
    assert resolve(config, "plain").known_hosts_name == "10.0.0.5"
    assert resolve(config, "aliased").known_hosts_name == "cluster-key"
    assert resolve(config, "other.example.org", user="carol").label == "ssh carol@other.example.org:22"
    assert parse_hop("jump") == (None, "jump", None)
    assert parse_hop(" bob@gw:2200") == ("bob", "gw", 2200)
    assert parse_hop("ssh://[::1]:22") == (None, "::1", 22)
    with pytest.raises(HostError, match="cannot parse jump host"):
        parse_hop("a@b@:x")


def test_a_server_that_is_no_ssh_server_gives_one_line(client_home: Path, rhl_dir: Path, tmp_path: Path) -> None:
    """paramiko's own traceback from its thread stays out of the output: one line says what happened."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up_on_each() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            time.sleep(0.3)  # says nothing, then hangs up (a service that is not SSH)
            conn.close()

    import threading

    threading.Thread(target=hang_up_on_each, daemon=True).start()
    ssh = client_home / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text(f"Host notssh\n  HostName 127.0.0.1\n  Port {port}\n")
    config = {"workdir": "/tmp/x", "key": "notssh", "command": "echo", "hostname": "127.0.0.1",
              "ssh_hostname": "notssh"}  # direct mode connects to hostname itself: one that resolves
    result = cli(config, tmp_path)
    listener.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Exception (client)" not in result.stderr
    assert re.fullmatch(rf"error: ssh notssh \(127\.0\.0\.1:{port}\): key exchange: the server closed the "
                        r"connection after 0\.\d s without an SSH greeting; is this an SSH server \(and is its "
                        r"port right\)\?", error_line(result)), error_line(result)


def test_quoted_workdir_under_home_is_the_remote_home_in_the_command(
        ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Callable[..., dict[str, Any]]) -> None:
    config = make_config(workdir="~/rhl-work/my dir")
    config["command"] = f"cd '{{workdir}}' && {config['command']}"
    run(config)
    state = remote_state(server, config["key"])
    assert state is not None and state["status"] == "running"
    assert state["command"].startswith(f"cd '{server.home}/rhl-work/my dir' && ")


def test_direct_mode_to_an_ssh_alias_says_the_name_does_not_resolve_here(
        server: SSHServer, client_home: Path, rhl_dir: Path, make_config: Callable[..., dict[str, Any]],
        tmp_path: Path) -> None:
    """`hostname: <alias>` with `tunnel: false`: only SSH knows the alias, this machine cannot connect to it."""
    server.write_ssh_config(client_home, "cluster-alias")
    config = make_config(hostname="cluster-alias")
    del config["ssh_hostname"]
    result = cli(config, tmp_path)
    assert result.returncode == 2
    assert error_line(result) == (
        "error: hostname: 'cluster-alias' does not resolve on this machine (an ~/.ssh/config alias? SSH knows "
        "those, this check does not); with 'tunnel: false' this machine connects to hostname itself: set "
        "'tunnel: true', or set hostname to the server's address (and ssh_hostname to the alias)")
    assert remote_state(server, config["key"]) is None  # nothing was started
    tunnelled = {**config, "tunnel": True, "network_interface": "127.0.0.1"}
    assert cli(tunnelled, tmp_path).returncode == 0  # what the message suggests works
    assert stop(tunnelled)["stopped"]  # the service and its tunnel keeper


def test_direct_mode_to_a_service_on_the_server_loopback_says_so(
        ssh_config: Path, server: SSHServer, rhl_dir: Path, make_config: Callable[..., dict[str, Any]],
        tmp_path: Path) -> None:
    config = make_config(network_interface="127.0.0.1")
    result = cli(config, tmp_path)
    assert result.returncode == 1
    assert error_line(result).endswith(
        "; it listens on the server's own 127.0.0.1 (network_interface), which only the server reaches: set "
        "'tunnel: true' to reach it over SSH, or a network_interface other machines reach (e.g. 0.0.0.0, every "
        "interface)"), result.stderr
