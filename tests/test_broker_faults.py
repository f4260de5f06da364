"""The broker under faults and load, against the real test sshd: out of file descriptors, stopped (SIGSTOP),
and a huge single-line log. Each command must go on (through the broker, or logged in itself), never hang.

Logins are counted in the sshd's own log, as in tests/test_broker.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remote_http_launcher.broker.registry import live_brokers
from tests.test_broker import ACCEPTED, brokers, write

if TYPE_CHECKING:
    from tests.remote import RemoteConfig
    from tests.sshd import SSHServer

LOW_LIMIT = 256  # macOS's default `ulimit -n`
FLOOD = 300
CONNECT_WAIT = 2.0


def logins(server: SSHServer) -> int:
    return server.log_text().count(ACCEPTED)


def run(*args: str | Path, limit: tuple[int, int] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, under an open-file limit (soft, hard) when given (a broker it starts inherits it)."""
    def apply() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)

    return subprocess.run([sys.executable, "-m", "remote_http_launcher", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=apply)


def ok(*args: str | Path, limit: tuple[int, int] | None = None, timeout: float = 60) -> str:
    result = run(*args, limit=limit, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(autouse=True)
def room_for_a_flood() -> Iterator[None]:
    """This process holds the flood's client ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * FLOOD)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def flood(family: socket.AddressFamily, address: str | tuple[str, int]) -> Iterator[list[socket.socket]]:
    """FLOOD connections held open (those the other end does not take within CONNECT_WAIT are left out)."""
    held: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            sock = socket.socket(family)
            sock.settimeout(CONNECT_WAIT)
            deadline = time.monotonic() + CONNECT_WAIT
            while True:
                try:
                    sock.connect(address)
                except BlockingIOError:  # a Unix socket's backlog is full: it says so at once
                    if time.monotonic() < deadline:
                        time.sleep(0.01)
                        continue
                    sock.close()
                except OSError:
                    sock.close()
                else:
                    held.append(sock)
                break
        assert len(held) == FLOOD
        yield held
    finally:
        for sock in held:
            sock.close()


def closed_at_once(socks: list[socket.socket]) -> int:
    """How many of `socks` the other end has closed (each looked at for up to 0.2 s)."""
    closed = 0
    for sock in socks:
        sock.settimeout(0.2)
        try:
            closed += sock.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
    return closed


# ---------------------------------------------------------------- out of file descriptors


def test_the_broker_raises_its_open_file_limit(keyed_server: SSHServer, remote_config: RemoteConfig,
                                               rhl_dir: Path, tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config, limit=(LOW_LIMIT, 4096))
    (broker,) = brokers(rhl_dir)
    assert open_files_limit(broker) == 4096


def test_a_flood_of_idle_clients_leaves_the_broker_serving(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                           rhl_dir: Path, tmp_path: Path) -> None:
    """300 connections to its socket that never prove the key, under `ulimit -n 256`: the excess is closed
    at once (a command then logs in itself, quickly), and once they are gone the broker serves again."""
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config, limit=(LOW_LIMIT, LOW_LIMIT))
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    with flood(socket.AF_UNIX, str(files.socket)) as held:
        assert closed_at_once(held) >= FLOOD - LOW_LIMIT // 4 - 8
        started = time.monotonic()
        assert "running" in ok("status", config, timeout=30)
        assert time.monotonic() - started < 20
    before = logins(keyed_server)
    assert "running" in ok("status", config, timeout=30)
    assert logins(keyed_server) == before  # through the broker
    assert brokers(rhl_dir) == [owner.pid]


def test_a_flood_through_a_tunnel_leaves_the_broker_serving(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                            rhl_dir: Path, tmp_path: Path) -> None:
    """300 TCP connections held open through one tunnel's local port, under `ulimit -n 256`: the excess is
    closed at once, the broker does not spin, and commands still go through it."""
    config = write(tmp_path, "a", remote_config(keyed_server, tunnel=True))
    payload = json.loads(ok(config, "--json", limit=(LOW_LIMIT, LOW_LIMIT)))
    (broker,) = brokers(rhl_dir)
    before = logins(keyed_server)
    with flood(socket.AF_INET, ("127.0.0.1", payload["port"])) as held:
        assert closed_at_once(held) >= FLOOD - LOW_LIMIT // 4 - 8
        cpu = cpu_seconds(broker)
        time.sleep(2)
        assert cpu_seconds(broker) - cpu < 0.5
        assert "running" in ok("status", config, timeout=30)
        assert logins(keyed_server) == before  # through the broker
    assert brokers(rhl_dir) == [broker]
