"""IdentityAgent as OpenSSH reads it, with a real ssh-agent: a socket path, `$VARIABLE`, `none`."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remote_http_launcher import AuthenticationError
from remote_http_launcher.ssh._paramiko import paramiko
from remote_http_launcher.ssh.connection import connect
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

AGENT_ONLY = {"IdentityFile": "none", "IdentitiesOnly": "no"}  # keys from the agent alone
ADD_IDENTITY = 17  # SSH2_AGENTC_ADD_IDENTITY
AGENT_SUCCESS = 6


def add_security_key(sock: Path) -> None:
    """Give the agent a FIDO `sk-ssh-ed25519@openssh.com` key (made up: there is no token to sign with),
    as ssh-add sends one: the real ssh-agent keeps it, and lists it first, since it is added first."""
    message = paramiko.Message()
    message.add_byte(bytes([ADD_IDENTITY]))
    message.add_string("sk-ssh-ed25519@openssh.com")
    message.add_string(os.urandom(32))  # public key
    message.add_string("ssh:")  # application
    message.add_byte(b"\x01")  # flags: user presence required
    message.add_string(os.urandom(64))  # key handle
    message.add_string(b"")  # reserved
    message.add_string("rhl-test FIDO key")
    payload = message.asbytes()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(str(sock))
        connection.sendall(struct.pack(">I", len(payload)) + payload)
        length = struct.unpack(">I", connection.recv(4))[0]
        assert connection.recv(length) == bytes([AGENT_SUCCESS])


@pytest.fixture
def agent_socket(sshd: SSHServer, tmp_path: Path) -> Iterator[Path]:
    """A real ssh-agent listening on its own socket, holding a FIDO key paramiko cannot use, then the key
    the test server accepts."""
    if shutil.which("ssh-agent") is None:
        pytest.fail("ssh-agent is missing: .ci/run installs openssh-client")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.02"], check=True)
        add_security_key(sock)
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True)
        yield sock
    finally:
        agent.terminate()
        agent.wait(5)


def test_identityagent_path_is_the_agent_used(sshd: SSHServer, client_home: Path, agent_socket: Path) -> None:
    sshd.start()
    sshd.write_ssh_config(client_home, ALIAS, {**AGENT_ONLY, "IdentityAgent": str(agent_socket)})
    connect(ALIAS, interactive=False).close()  # no SSH_AUTH_SOCK (client_home removed it): the socket it names


def test_identityagent_variable(sshd: SSHServer, client_home: Path, agent_socket: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    sshd.start()
    monkeypatch.setenv("RHL_TEST_AGENT", str(agent_socket))
    sshd.write_ssh_config(client_home, ALIAS, {**AGENT_ONLY, "IdentityAgent": "$RHL_TEST_AGENT"})
    connect(ALIAS, interactive=False).close()


def test_identityagent_none_ignores_ssh_auth_sock(sshd: SSHServer, client_home: Path, agent_socket: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sshd.start()
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent_socket))
    sshd.write_ssh_config(client_home, ALIAS, {**AGENT_ONLY, "IdentityAgent": "none"})
    with pytest.raises(AuthenticationError, match=r"tried: agent \(0 keys\)"):
        connect(ALIAS, interactive=False)
    (client_home / ".ssh" / "config").unlink()  # the same host without IdentityAgent: SSH_AUTH_SOCK's agent
    sshd.write_ssh_config(client_home, ALIAS, AGENT_ONLY)
    connect(ALIAS, interactive=False).close()


def test_a_key_paramiko_cannot_use_is_skipped(sshd: SSHServer, client_home: Path, agent_socket: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """The FIDO key comes first in the agent: it is skipped (a debug line), the server's key logs in."""
    listed = subprocess.run(["ssh-add", "-l"], env={**os.environ, "SSH_AUTH_SOCK": str(agent_socket)},
                            check=True, capture_output=True, text=True).stdout.splitlines()
    assert "(ED25519-SK)" in listed[0] and len(listed) == 2
    sshd.start()
    sshd.write_ssh_config(client_home, ALIAS, {**AGENT_ONLY, "IdentityAgent": str(agent_socket)})
    with caplog.at_level("DEBUG", logger="remote_http_launcher.ssh"):
        connect(ALIAS, interactive=False).close()
    assert "agent key sk-ssh-ed25519@openssh.com (rhl-test FIDO key): a type paramiko cannot use; skipped" \
        in caplog.text
