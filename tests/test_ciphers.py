"""Cipher choice: AES-GCM first when the server offers it; ~/.ssh/config's Ciphers honoured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remote_http_launcher.hosts.ssh import SSHHost
from remote_http_launcher.ssh.ciphers import offered
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

PARAMIKO = ("aes128-ctr", "aes256-ctr", "aes128-cbc", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


@pytest.mark.parametrize(("configured", "expected"), [
    ("", ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr", "aes128-cbc")),
    ("aes256-ctr,aes128-ctr", ("aes256-ctr", "aes128-ctr")),
    ("-aes128-gcm@openssh.com,aes128-cbc", ("aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")),
    ("^aes256-ctr", ("aes256-ctr", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes128-cbc")),
    ("+chacha20-poly1305@openssh.com", ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr",
                                        "aes256-ctr", "aes128-cbc")),
    ("chacha20-poly1305@openssh.com", ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr",
                                       "aes256-ctr", "aes128-cbc")),  # none we know: the default list
])
def test_offered_order(configured: str, expected: tuple[str, ...]) -> None:
    assert offered(PARAMIKO, configured) == expected


@pytest.mark.parametrize(("options", "cipher"), [({}, "aes128-gcm@openssh.com"),
                                                 ({"Ciphers": "aes128-ctr"}, "aes128-ctr")])
def test_negotiated_with_a_real_sshd(sshd: SSHServer, client_home: Path, options: dict[str, str],
                                     cipher: str) -> None:
    sshd.write_ssh_config(client_home, ALIAS, options)
    with SSHHost.connect(ALIAS) as host:
        assert isinstance(host, SSHHost)
        assert host.transport.local_cipher == cipher
