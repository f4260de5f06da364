"""IdentityAgent as OpenSSH reads it, with a real ssh-agent: a socket path, `$VARIABLE`, `none`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remote_http_launcher import AuthenticationError
from remote_http_launcher.ssh.connection import connect
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

AGENT_ONLY = {"IdentityFile": "none", "IdentitiesOnly": "no"}  # keys from the agent alone


@pytest.fixture
def agent_socket(sshd: SSHServer, tmp_path: Path) -> Iterator[Path]:
    """A real ssh-agent holding the key the test server accepts, listening on its own socket."""
    if shutil.which("ssh-agent") is None:
        pytest.fail("ssh-agent is missing: .ci/run installs openssh-client")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.02"], check=True)
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
