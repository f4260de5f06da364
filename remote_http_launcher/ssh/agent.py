"""The ssh-agent a login uses, chosen as OpenSSH chooses it: `IdentityAgent`, else the default.

`IdentityAgent none` uses no agent; `SSH_AUTH_SOCK` (or no setting) the
default one, which paramiko finds (the SSH_AUTH_SOCK socket on POSIX; Pageant,
then the Windows OpenSSH agent's pipe on Windows); `$NAME` the socket or pipe
that environment variable names; anything else is that path: a Unix socket on
POSIX, a named pipe (`\\\\.\\pipe\\NAME`) on Windows.
"""

from __future__ import annotations

import os
import socket
import sys

from ._paramiko import agent_over, paramiko

DEFAULT = "ssh_auth_sock"


def open_agent(identity_agent: str) -> paramiko.Agent | None:
    """The agent for an `IdentityAgent` value ("" when unset); None when there is none to use.

    OSError or paramiko.SSHException when the named agent cannot be reached.
    """
    setting = identity_agent.strip()
    if setting.lower() == "none":
        return None
    if not setting or setting.lower() == DEFAULT:
        return paramiko.Agent()
    if setting.startswith("$"):
        setting = os.environ.get(setting[1:], "")
        if not setting:
            return None
    path = os.path.expanduser(setting)
    if sys.platform == "win32":
        return agent_over(PipeConnection(path))
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        raise
    return agent_over(connection)


class PipeConnection:
    """A Windows named pipe as the send/recv connection paramiko's agent client speaks over."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))

    def send(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def recv(self, size: int) -> bytes:
        return os.read(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)
