"""Fixtures for tests of services on the test sshd (a pytest plugin, see conftest.py).

`keyed_server` / `password_server`: the test sshd as the client's ~/.ssh/config names it (ALIAS),
logged in to with its key, or with its password only; what a test started there is removed after.
`remote_config(server, tunnel=False, **fields)`: the demo service on that server under a key of the
test's own; a tunnel reaches it on the server's loopback, direct mode on its address. Tunnel keepers
a test leaves are stopped after it.
`connection_dir`: the client directory, for tests that start keepers themselves; they are stopped after.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher.commands.stop import stop_keeper
from remote_http_launcher.tunnels.lock import MARKER
from tests.posix import SIGKILL
from tests.ssh_client import ALIAS, demo_config, node_key, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import SSHServer

CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"')
RemoteConfig = Callable[..., dict[str, Any]]


def _server(sshd: SSHServer, client_home: Path, options: dict[str, str]) -> Iterator[SSHServer]:
    sshd.start()  # a test before may have stopped it
    sshd.write_ssh_config(client_home, ALIAS, options)
    yield sshd
    sshd.run(CLEANUP)


@pytest.fixture
def keyed_server(sshd: SSHServer, client_home: Path) -> Iterator[SSHServer]:
    yield from _server(sshd, client_home, {})


@pytest.fixture
def password_server(sshd: SSHServer, client_home: Path) -> Iterator[SSHServer]:
    yield from _server(sshd, client_home, {"IdentityFile": "none"})


@pytest.fixture
def password_config(password_server: SSHServer, remote_config: RemoteConfig) -> RemoteConfig:
    """`password_config(tunnel=False, **fields)`: remote_config on the password-only server."""
    return partial(remote_config, password_server)


@pytest.fixture
def remote_config(remote_demo: str, rhl_dir: Path, request: pytest.FixtureRequest) -> Iterator[RemoteConfig]:
    unique = f"{binascii.crc32(request.node.nodeid.encode()):08x}"
    key = f"{node_key('r-', request.node.name)[:60]}-{unique}"

    def make(server: SSHServer, *, tunnel: bool = False, **fields: Any) -> dict[str, Any]:
        where: dict[str, Any] = {"tunnel": True, "network_interface": "127.0.0.1"} if tunnel else {}
        return demo_config(server, remote_demo, key, **{**where, **fields})

    yield make
    client = rhl_dir / "client"
    for lock in client.glob("*.keeper.lock"):
        stop_keeper(lock.name.removesuffix(".keeper.lock"), client, timeout=3)


@pytest.fixture
def connection_dir(rhl_dir: Path) -> Iterator[Path]:
    """The client directory; every keeper still serving it is stopped afterwards."""
    directory = rhl_dir / "client"
    yield directory
    for lock in directory.glob("*.keeper.lock"):
        stop_keeper(lock.name.removesuffix(".keeper.lock"), directory, timeout=3)
    for pid in keeper_processes(str(directory)):
        os.kill(pid, SIGKILL)


def keeper_processes(word: str) -> list[int]:
    """PIDs of tunnel keepers whose command line has `word` as one of its arguments: a key, or a connection
    directory (other test runs on this machine may have keepers of their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if MARKER.encode() in argv and word.encode() in argv:
            found.append(int(entry.name))
    return found
