"""OpenSSH user certificates against a real sshd that trusts only its test CA (tests/sshd.py's sshd_cert)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import AuthenticationError, run, status, stop
from remote_http_launcher.ssh.connection import connect
from tests.ssh_client import ALIAS, demo_config, node_key, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import CertSSHServer, SSHServer

CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"')
AGENT_ONLY = {"IdentityFile": "none", "IdentitiesOnly": "no"}


def test_the_key_alone_is_refused(sshd_cert: CertSSHServer, client_home: Path) -> None:
    """The server really wants a certificate: the plain key it was not told about fails."""
    sshd_cert.write_ssh_config(client_home, ALIAS)
    with pytest.raises(AuthenticationError, match="authentication failed"):
        connect(ALIAS, interactive=False)


def test_certificate_file_with_tokens(sshd_cert: CertSSHServer, client_home: Path) -> None:
    """CertificateFile under a name of its own, with `~` and `%r`: offered with the key it certifies."""
    sshd_cert.certify(client_home / "certs" / f"{sshd_cert.user}-cert.pub")
    sshd_cert.write_ssh_config(client_home, ALIAS, {"CertificateFile": "~/certs/%r-cert.pub"})
    connect(ALIAS, interactive=False).close()
    assert f"Accepted publickey for {sshd_cert.user}" in sshd_cert.log_text()


def test_several_certificate_files_the_valid_one_is_used(sshd_cert: CertSSHServer, client_home: Path) -> None:
    """Two CertificateFile lines (in two blocks, as OpenSSH accumulates them): the expired one is skipped."""
    old = sshd_cert.certify(client_home / "old-cert.pub", validity="20200101:20200102")
    new = sshd_cert.certify(client_home / "new-cert.pub")
    config = sshd_cert.write_ssh_config(client_home, ALIAS, {"CertificateFile": str(old)})
    config.write_text(config.read_text() + f"Host *\n    CertificateFile {new}\n")
    connect(ALIAS, interactive=False).close()


def test_each_certificate_first_then_the_key_alone(sshd: SSHServer, sshd_cert: CertSSHServer, client_home: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """As OpenSSH: the certificate is offered first; a server that does not trust its CA (the plain `sshd`)
    refuses it, and the key alone logs in. The debug log lists the offers in order."""
    cert = sshd_cert.certify(client_home / "c-cert.pub")
    sshd.start()
    sshd.write_ssh_config(client_home, ALIAS, {"CertificateFile": str(cert)})
    with caplog.at_level(logging.DEBUG, logger="remote_http_launcher.ssh"):
        connect(ALIAS, interactive=False).close()
    offers = [record.getMessage() for record in caplog.records if "publickey: offering" in record.getMessage()]
    login = f"{sshd.user}@{sshd.host}"
    assert offers == [f"{login}: publickey: offering ~/c-cert.pub", f"{login}: publickey: offering {sshd.client_key}"]


def test_an_expired_certificate_is_one_clear_line(sshd_cert: CertSSHServer, client_home: Path) -> None:
    cert = sshd_cert.certify(client_home / ".ssh" / "id-cert.pub", validity="20200101:20200102")
    sshd_cert.write_ssh_config(client_home, ALIAS, {"CertificateFile": str(cert)})
    with pytest.raises(AuthenticationError) as failure:
        connect(ALIAS, interactive=False)
    message = str(failure.value)
    assert "certificate ~/.ssh/id-cert.pub expired at 2020-01-02 00:00:00 UTC; get a new one" in message
    assert "\n" not in message


def test_a_certificate_for_another_login_is_one_clear_line(sshd_cert: CertSSHServer, client_home: Path) -> None:
    cert = sshd_cert.certify(client_home / "cert.pub", principals="alice,bob")
    sshd_cert.write_ssh_config(client_home, ALIAS, {"CertificateFile": str(cert)})
    with pytest.raises(AuthenticationError, match=rf"certificate \S+cert.pub is for alice, bob, not {sshd_cert.user}"):
        connect(ALIAS, interactive=False)


def test_certificate_beside_the_identity_file(sshd_cert: CertSSHServer, client_home: Path) -> None:
    """`<IdentityFile>-cert.pub`, the convention ssh-keygen -s follows."""
    key = client_home / ".ssh" / "id_ed25519"
    key.parent.mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(sshd_cert.client_key, key)
    key.chmod(0o600)
    shutil.copyfile(f"{sshd_cert.client_key}.pub", f"{key}.pub")
    sshd_cert.certify(Path(f"{key}-cert.pub"))
    sshd_cert.write_ssh_config(client_home, ALIAS, {"IdentityFile": "~/.ssh/id_ed25519"})
    connect(ALIAS, interactive=False).close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ssh-agent on a socket of its own: the environment that names it."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.02"], check=True)
        yield {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    finally:
        process.terminate()
        process.wait(5)


def test_a_certificate_the_agent_holds(sshd_cert: CertSSHServer, client_home: Path, tmp_path: Path,
                                       agent: dict[str, str]) -> None:
    """ssh-add of a key with its certificate beside: the agent holds both, no file is configured."""
    key = tmp_path / "keys" / "id"
    sshd_cert.certify(Path(f"{key}-cert.pub"))
    shutil.copyfile(sshd_cert.client_key, key)
    key.chmod(0o600)
    shutil.copyfile(f"{sshd_cert.client_key}.pub", f"{key}.pub")
    subprocess.run(["ssh-add", "-q", str(key)], env=agent, check=True, capture_output=True)
    listed = subprocess.run(["ssh-add", "-l"], env=agent, check=True, capture_output=True, text=True).stdout
    assert "CERT" in listed
    sshd_cert.write_ssh_config(client_home, ALIAS, {**AGENT_ONLY, "IdentityAgent": agent["SSH_AUTH_SOCK"]})
    connect(ALIAS, interactive=False).close()


def test_the_agent_holds_the_key_the_certificate_is_beside_its_file(sshd_cert: CertSSHServer, client_home: Path,
                                                                     tmp_path: Path, agent: dict[str, str]) -> None:
    """The key comes from the agent (so its file is not loaded), its certificate from `<IdentityFile>-cert.pub`."""
    key = tmp_path / "keys" / "id"
    key.parent.mkdir()
    shutil.copyfile(sshd_cert.client_key, key)
    key.chmod(0o600)
    shutil.copyfile(f"{sshd_cert.client_key}.pub", f"{key}.pub")
    subprocess.run(["ssh-add", "-q", str(key)], env=agent, check=True, capture_output=True)
    sshd_cert.certify(Path(f"{key}-cert.pub"))
    sshd_cert.write_ssh_config(client_home, ALIAS, {"IdentityFile": str(key), "IdentityAgent": agent["SSH_AUTH_SOCK"]})
    connect(ALIAS, interactive=False).close()


@pytest.mark.parametrize("keeper", [{}, {"connection_persist": 0}], ids=["broker", "keeper"])
def test_launch_reconnect_tunnel_and_stop_with_a_certificate(sshd_cert: CertSSHServer, remote_demo: str,
                                                            client_home: Path, rhl_dir: Path,
                                                            request: pytest.FixtureRequest,
                                                            keeper: dict[str, Any]) -> None:
    """The whole life of a tunneled service (the keeper and the broker log in by themselves) on a
    certificate-only host."""
    sshd_cert.certify(client_home / "certs" / "cert.pub")
    sshd_cert.write_ssh_config(client_home, ALIAS, {"CertificateFile": "~/certs/cert.pub"})
    sshd_cert.run(f"cp {remote_demo} ~/cert_demo.py")
    config = demo_config(sshd_cert, f"{sshd_cert.home}/cert_demo.py", node_key("cert-", request.node.name),
                         tunnel=True, network_interface="127.0.0.1", **keeper)
    try:
        payload = run(config)
        assert run(config) == payload  # reconnecting to the running service
        assert status(config)["client"]["tunnel_up"] is True
        stop(config)
        assert status(config)["status"] != "running"
    finally:
        sshd_cert.run(CLEANUP)
