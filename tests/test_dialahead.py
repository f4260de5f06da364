"""ssh/dialahead.py on loopback: what is remembered, when a guess stands, and which early socket a login takes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote_http_launcher import statefiles
from remote_http_launcher.ssh import dialahead


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(10)
        yield sock


def address_of(sock: socket.socket) -> dialahead.Address:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def test_a_remembered_address_stands_while_its_files_are_unchanged(rhl_dir: Path, tmp_path: Path) -> None:
    config, system = tmp_path / "config", tmp_path / "absent"
    config.write_text("Host a\n    Port 2222\n")
    dialahead.remember("user@a", ("10.0.0.1", 2222), [str(config), str(system)])
    assert dialahead.guess("user@a") == ("10.0.0.1", 2222)
    assert dialahead.guess("a") is None  # another target
    cache = Path(dialahead.cache_path())
    assert cache.stat().st_mode & 0o777 == statefiles.FILE_MODE
    written = cache.stat().st_mtime_ns
    dialahead.remember("user@a", ("10.0.0.1", 2222), [str(config), str(system)])
    assert cache.stat().st_mtime_ns == written  # nothing new: not written again

    config.write_text("Host a\n    Port 2223\n")
    assert dialahead.guess("user@a") is None  # edited
    dialahead.remember("user@a", ("10.0.0.1", 2223), [str(config), str(system)])
    system.write_text("Host *\n")
    assert dialahead.guess("user@a") is None  # a file that was missing appeared


def test_a_planted_or_garbled_cache_is_no_guess(rhl_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("")
    dialahead.remember("a", ("10.0.0.1", 22), [str(config)])
    cache = Path(dialahead.cache_path())
    seal, _, payload = cache.read_bytes().partition(b"\n")
    cache.write_bytes(seal + b"\n" + payload.replace(b"10.0.0.1", b"10.6.6.6"))  # not what we sealed
    assert dialahead.guess("a") is None
    statefiles.write_sealed(cache, b'{"a": {"address": ["10.0.0.1", 0], "files": []}}')
    assert dialahead.guess("a") is None  # no port


def test_only_the_remembered_number_of_targets_is_kept(rhl_dir: Path, tmp_path: Path) -> None:
    for number in range(dialahead.MAX_TARGETS + 1):
        dialahead.remember(f"host{number}", ("10.0.0.1", 22), [])
    assert dialahead.guess("host0") is None
    assert dialahead.guess("host1") == dialahead.guess(f"host{dialahead.MAX_TARGETS}") == ("10.0.0.1", 22)


def test_a_login_takes_the_early_connection_to_its_own_address(listener: socket.socket) -> None:
    dialahead.dial(address_of(listener))
    accepted, _ = listener.accept()
    with accepted:
        sock = dialahead.take(address_of(listener), 10)
        assert sock is not None
        with sock:
            sock.sendall(b"hello")
            assert accepted.recv(5) == b"hello"
    assert dialahead.take(address_of(listener), 10) is None  # taken once


def test_an_early_connection_elsewhere_is_closed_unused(listener: socket.socket) -> None:
    dialahead.dial(address_of(listener))
    accepted, _ = listener.accept()
    with accepted:
        assert dialahead.take(("127.0.0.1", 1), 10) is None
        accepted.settimeout(10)
        assert accepted.recv(1) == b""  # closed, having sent nothing


def test_an_early_connection_that_failed_fails_the_login_as_its_own_would() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = address_of(probe)
    dialahead.dial(closed)
    with pytest.raises(ConnectionRefusedError):
        dialahead.take(closed, 10)


def test_discard_closes_what_nobody_took(listener: socket.socket) -> None:
    dialahead.dial(address_of(listener))
    accepted, _ = listener.accept()
    with accepted:
        dialahead.discard()
        accepted.settimeout(10)
        assert accepted.recv(1) == b""
