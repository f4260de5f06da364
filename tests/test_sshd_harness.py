"""Proves the real-sshd harness in tests/sshd.py works, using paramiko directly.

If these fail, every SSH test built on the harness is suspect, so they check
the pieces other tests rely on: host-key verification from the written
known_hosts, key and password auth, SFTP, run(), namespace isolation,
hand-made ProxyJump, and stop()/start().
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest

if TYPE_CHECKING:  # importing at runtime would defeat the plugin's assert rewriting
    from tests.sshd import SSHServer

pytest_plugins = ["tests.sshd"]


def _exec(client: paramiko.SSHClient, cmd: str) -> str:
    _, stdout, stderr = client.exec_command(cmd, timeout=30)
    out: str = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    return out.strip()


def _wait_inactive(transport: paramiko.Transport, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not transport.is_active():
            return True
        time.sleep(0.05)
    return False


def test_key_auth_verifies_host_key_from_written_known_hosts(sshd: SSHServer, tmp_path: Path) -> None:
    config_path = sshd.write_ssh_config(tmp_path)
    cfg = paramiko.SSHConfig.from_path(str(config_path)).lookup("testhost")
    assert cfg["identitiesonly"] == "yes"
    assert sshd.host_key_line.startswith(f"[{sshd.host}]:{sshd.port} ssh-ed25519 AAAA")

    client = paramiko.SSHClient()
    client.load_host_keys(cfg["userknownhostsfile"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        cfg["hostname"],
        port=int(cfg["port"]),
        username=cfg["user"],
        key_filename=cfg["identityfile"][0],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        assert _exec(client, "id -un") == sshd.user
        assert _exec(client, 'echo "$HOME"') == str(sshd.home)
        assert _exec(client, "python3 -c 'import sys; print(sys.executable)'") == sshd.python
        assert _exec(client, "touch written && echo ok") == "ok"
    finally:
        client.close()


def test_unknown_host_key_is_rejected(sshd: SSHServer, tmp_path: Path) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(
            sshd.host,
            port=sshd.port,
            username=sshd.user,
            key_filename=str(sshd.client_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    client.close()


def test_password_auth(sshd: SSHServer) -> None:
    client = sshd.connect(key_filename=None, password=sshd.password)
    try:
        assert _exec(client, "id -un") == sshd.user
    finally:
        client.close()
    with pytest.raises(paramiko.AuthenticationException):
        sshd.connect(key_filename=None, password="wrong-" + sshd.password)


def test_sftp_lists_home(sshd: SSHServer) -> None:
    with sshd.connect() as client, client.open_sftp() as sftp:
        with sftp.open("sftp-probe.txt", "w") as fh:
            fh.write("hello")
        assert sftp.normalize(".") == str(sshd.home)
        assert "sftp-probe.txt" in sftp.listdir(str(sshd.home))
    owner = sshd.run("stat -c %U sftp-probe.txt", check=True).stdout.strip()
    assert owner == sshd.user


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_openssh_client_accepts_written_config_and_proxyjump(
    sshd: SSHServer, jump_sshd: SSHServer, tmp_path: Path
) -> None:
    jump_sshd.write_ssh_config(tmp_path, alias="jump")
    config = sshd.write_ssh_config(tmp_path, alias="target", extra={"ProxyJump": "jump"})
    for alias, expected in (("jump", jump_sshd), ("target", sshd)):
        proc = subprocess.run(
            ["ssh", "-F", str(config), "-o", "BatchMode=yes", alias, "id -un; echo $SSH_CONNECTION"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        user, connection = proc.stdout.splitlines()
        assert user == expected.user
        assert connection.split()[2:] == [expected.host, str(expected.port)]


def test_run_is_test_user_in_server_namespace(sshd: SSHServer) -> None:
    assert sshd.run("id -un", check=True).stdout.strip() == sshd.user
    remote_ns = sshd.run("readlink /proc/self/ns/net", check=True).stdout.strip()
    if sshd.netns:
        assert remote_ns != os.readlink("/proc/self/ns/net")
    else:
        assert remote_ns == os.readlink("/proc/self/ns/net")


LISTENER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
s.settimeout(1)
deadline = time.monotonic() + 60  # stops by itself
while time.monotonic() < deadline:
    try:
        conn, _ = s.accept()
    except socket.timeout:
        continue
    conn.sendall(b"hello-from-namespace\\n")
    conn.close()
"""


def test_namespace_loopback_service_only_reachable_through_ssh(sshd: SSHServer) -> None:
    if sshd.netns is None:
        pytest.skip("sshd runs without a network namespace (not root, no `ip netns`, or RHL_TEST_NO_NETNS)")
    with socket.socket() as probe:  # a port nothing on the host's loopback uses
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (sshd.home / "listener.py").write_text(LISTENER)
    sshd.run(f"setsid nohup python3 listener.py {port} >/dev/null 2>&1 & echo $! > listener.pid", check=True)
    try:
        with sshd.connect() as client:
            transport = client.get_transport()
            assert transport is not None
            deadline = time.monotonic() + 10
            while True:
                try:
                    chan = transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=5)
                    break
                except paramiko.ChannelException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            with chan:
                assert chan.makefile("rb").readline() == b"hello-from-namespace\n"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        sshd.run("kill $(cat listener.pid)")


def test_jump_server_forwards_to_target_by_hand(sshd: SSHServer, jump_sshd: SSHServer) -> None:
    assert jump_sshd.netns is None and jump_sshd.host == "127.0.0.1"
    with jump_sshd.connect() as jump:
        jump_transport = jump.get_transport()
        assert jump_transport is not None
        chan = jump_transport.open_channel("direct-tcpip", (sshd.host, sshd.port), ("127.0.0.1", 0), timeout=10)
        with paramiko.Transport(chan) as inner:
            inner.start_client(timeout=10)
            assert inner.get_remote_server_key() == sshd.host_pubkey
            inner.auth_publickey(sshd.user, paramiko.Ed25519Key.from_private_key_file(str(sshd.client_key)))
            assert inner.is_authenticated()
            session = inner.open_session(timeout=10)
            session.exec_command("id -un")
            assert session.makefile("rb").read().decode().strip() == sshd.user
            assert session.recv_exit_status() == 0


def test_stop_drops_connections_and_start_restores(sshd: SSHServer) -> None:
    client = sshd.connect()
    transport = client.get_transport()
    assert transport is not None
    try:
        sshd.stop()
        assert not sshd.is_running()
        assert _wait_inactive(transport), "stop() should drop live connections"
        with pytest.raises((OSError, paramiko.SSHException)):
            sshd.connect(timeout=3)
    finally:
        client.close()
        sshd.start()
    with sshd.connect() as again:  # same port, same host key (RejectPolicy)
        assert _exec(again, "id -un") == sshd.user


def test_set_link_down_cuts_silently_and_up_restores(sshd: SSHServer) -> None:
    if sshd.netns is None:
        pytest.skip("set_link needs a network namespace")
    try:
        sshd.set_link(False)
        with pytest.raises(OSError):
            socket.create_connection((sshd.host, sshd.port), timeout=2).close()
    finally:
        sshd.set_link(True)
    deadline = time.monotonic() + 10
    while True:
        try:
            client = sshd.connect(timeout=3)
            break
        except (OSError, paramiko.SSHException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with client:
        assert _exec(client, "id -un") == sshd.user
