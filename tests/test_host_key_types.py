"""A host with a known key of one type that offers a key of another type has changed, it is not new.

The server (tests/sshd.py) has only an ECDSA host key; known_hosts has an ED25519 key for it (a server
that was replaced, or someone in between who offers the one type we do not know). OpenSSH's accept-new
refuses that ("REMOTE HOST IDENTIFICATION HAS CHANGED"); so do we, with --accept-new-host-key or without,
on every way a login happens: here, in the connection broker, in the tunnel keeper, through the CLI and
through run(); and the refusal names the key we know.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
import pytest

from remote_http_launcher import HostKeyError, run
from tests.ssh_client import ALIAS
from tests.sshd import launch_sshd

if TYPE_CHECKING:
    from tests.sshd import SSHAccount, SSHServer

#: A valid ED25519 public key that is not the server's (the server has none).
KNOWN = paramiko.PKey.from_type_string("ssh-ed25519", b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32)))
WAYS: dict[str, dict[str, Any]] = {  # config fields that make each process log in
    "here": {"connection_persist": 0},
    "broker": {},
    "keeper": {"tunnel": True, "network_interface": "127.0.0.1", "connection_persist": 0},
    "broker-tunnel": {"tunnel": True, "network_interface": "127.0.0.1"},
}


@pytest.fixture(scope="module")
def ecdsa_server(sshd_account: SSHAccount) -> Iterator[SSHServer]:
    server = launch_sshd(sshd_account, f"ecdsa-{secrets.token_hex(3)}", host_key_type="ecdsa")
    try:
        yield server
    finally:
        server.close()


def known_hosts_with_ed25519(server: SSHServer, client_home: Path, name: str | None = None,
                             **options: str) -> Path:
    """~/.ssh/config for the server (StrictHostKeyChecking ask: the flag would be the way to accept a new
    key), and known_hosts with only our ED25519 key for the name OpenSSH looks up."""
    server.write_ssh_config(client_home, ALIAS, {"StrictHostKeyChecking": "ask", **options})
    known_hosts = client_home / ".ssh" / "known_hosts"
    known_hosts.write_text(f"{name or server.host_key_line.split()[0]} {KNOWN.get_name()} {KNOWN.get_base64()}\n")
    return known_hosts


def config(server: SSHServer, tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"workdir": "~/rhl-work", "hostname": server.host, "ssh_hostname": ALIAS,
                                "network_interface": "0.0.0.0", "key": "host-key-type",
                                "command": f"{server.python} -c pass {{status_file}}", **fields}))
    return path


def changed(server: SSHServer, name: str) -> str:
    """The refusal, naming the key the server sent and the one known_hosts has (type and fingerprint)."""
    return (f"ssh {ALIAS} ({server.host}:{server.port}): host key: HOST KEY FOR {name} HAS CHANGED: the server "
            f"sent ECDSA key {server.host_pubkey.fingerprint} but ~/.ssh/known_hosts has ED25519 key "
            f"{KNOWN.fingerprint}; someone may be intercepting the connection")


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path), *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("way", WAYS)
def test_a_key_of_another_type_is_a_changed_key_with_or_without_the_flag(
        way: str, ecdsa_server: SSHServer, client_home: Path, rhl_dir: Path, tmp_path: Path) -> None:
    known_hosts = known_hosts_with_ed25519(ecdsa_server, client_home)
    before = known_hosts.read_text()
    path = config(ecdsa_server, tmp_path, **WAYS[way])
    expected = changed(ecdsa_server, ecdsa_server.host_key_line.split()[0])
    for flag in (["--accept-new-host-key"], []):
        result = cli(path, *flag)
        assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith(f"error: {expected}"), \
            (flag, result.stderr)
    with pytest.raises(HostKeyError) as info:
        run(str(path), accept_new_host_key=True)
    assert str(info.value).startswith(expected)
    assert known_hosts.read_text() == before  # nothing recorded
    assert not (rhl_dir / "client" / "host-key-type.json").exists()


def test_a_key_of_another_type_under_a_host_key_alias_is_a_changed_key(
        ecdsa_server: SSHServer, client_home: Path, rhl_dir: Path, tmp_path: Path) -> None:
    known_hosts = known_hosts_with_ed25519(ecdsa_server, client_home, "cluster-login", HostKeyAlias="cluster-login")
    before = known_hosts.read_text()
    path = config(ecdsa_server, tmp_path, connection_persist=0)
    for flag in (["--accept-new-host-key"], []):
        result = cli(path, *flag)
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines()[-1].startswith(f"error: {changed(ecdsa_server, 'cluster-login')}"), \
            (flag, result.stderr)
    assert known_hosts.read_text() == before


def test_the_server_offers_only_ecdsa(ecdsa_server: SSHServer) -> None:
    """What the tests above rely on: no other key type to fall back to."""
    transport = paramiko.Transport((ecdsa_server.host, ecdsa_server.port))
    try:
        transport.get_security_options().key_types = ("ssh-ed25519",)
        with pytest.raises(paramiko.SSHException):
            transport.start_client(timeout=10)
    finally:
        transport.close()
    key_b64 = ecdsa_server.host_key_line.split()[2]
    assert ecdsa_server.host_pubkey.asbytes() == base64.b64decode(key_b64)
    assert ecdsa_server.host_pubkey.get_name().startswith("ecdsa-")
