"""Kerberos (gssapi-with-mic) logins against a real MIT KDC and a GSSAPI-only sshd (tests/kerberos.py)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import AuthenticationError, run, status, stop
from remote_http_launcher.ssh.connection import connect
from tests.ssh_client import ALIAS, demo_config, node_key, stop_services_script

if TYPE_CHECKING:
    from tests.kerberos import KDC
    from tests.sshd import SSHServer

CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"')
KERBEROS = {"GSSAPIAuthentication": "yes", "IdentityFile": "none"}


@pytest.fixture
def ccache(kdc: KDC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The credential cache the command runs with (KRB5CCNAME), in the test realm's KRB5_CONFIG; empty."""
    path = tmp_path / "krb5cc"
    monkeypatch.setenv("KRB5_CONFIG", str(kdc.config))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{path}")
    return path


def logged(server: SSHServer, text: str) -> bool:
    """Whether sshd's log says `text` (within a few seconds: sshd may write it after the client went on)."""
    deadline = time.monotonic() + 5
    while text not in server.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_ticket_logs_in(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path, client_home: Path) -> None:
    kdc.kinit(ccache)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, KERBEROS)
    connect(ALIAS, interactive=False).close()
    assert logged(sshd_gssapi, f"Accepted gssapi-with-mic for {sshd_gssapi.user}")


def test_gssapi_trust_dns_picks_the_reverse_name(sshd_gssapi_localhost: SSHServer, kdc: KDC, ccache: Path,
                                                client_home: Path) -> None:
    """A host with two names (127.0.0.1 and localhost), its principal host/localhost: as OpenSSH, the name
    as configured by default (GSSAPITrustDNS no: host/127.0.0.1, which the realm does not have); with
    GSSAPITrustDNS yes the reverse lookup's name, confirmed by a forward lookup."""
    kdc.kinit(ccache)
    server = sshd_gssapi_localhost
    server.write_ssh_config(client_home, ALIAS, KERBEROS)
    server.write_ssh_config(client_home, "trusting", {**KERBEROS, "GSSAPITrustDNS": "yes"})
    with pytest.raises(AuthenticationError, match=r"gssapi-with-mic \(host/127\.0\.0\.1: .*not found in Kerberos"):
        connect(ALIAS, interactive=False)
    connect("trusting", interactive=False).close()
    assert logged(server, f"Accepted gssapi-with-mic for {server.user}")


def test_gssapi_key_exchange_is_ignored_with_a_debug_line(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path,
                                                          client_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """GSSAPIKeyExchange (Debian's patch) is not supported: one debug line says so, and Kerberos still logs
    in by gssapi-with-mic."""
    kdc.kinit(ccache)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, {**KERBEROS, "GSSAPIKeyExchange": "yes"})
    with caplog.at_level(logging.DEBUG, logger="remote_http_launcher.ssh"):
        connect(ALIAS, interactive=False).close()
    [line] = [r.getMessage() for r in caplog.records if "GSSAPIKeyExchange" in r.getMessage()]
    assert line.endswith("GSSAPIKeyExchange is not supported; ignored (Kerberos key exchange, a Debian and Fedora "
                         "patch to OpenSSH; Kerberos logs in by gssapi-with-mic with GSSAPIAuthentication yes)")


def test_gssapi_server_identity_names_the_principal(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path,
                                                    client_home: Path) -> None:
    """The principal comes from the configured name, not a reverse lookup: another name is another principal."""
    kdc.kinit(ccache)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, {**KERBEROS, "GSSAPIServerIdentity": "elsewhere.invalid"})
    with pytest.raises(AuthenticationError, match=r"gssapi-with-mic \(host/elsewhere\.invalid: "):
        connect(ALIAS, interactive=False)


def session_ccache(alias: str) -> str:
    """KRB5CCNAME in a session on the server: where sshd stored delegated credentials (empty: none)."""
    connection = connect(alias, interactive=False)
    try:
        channel = connection.transport.open_session()
        channel.exec_command('printf %s "$KRB5CCNAME"')
        return channel.makefile("rb").read().decode()
    finally:
        connection.close()


def test_gssapi_delegate_credentials(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path, client_home: Path) -> None:
    """GSSAPIDelegateCredentials yes forwards the ticket (sshd keeps it for the session); off by default."""
    kdc.kinit(ccache, forwardable=True)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, KERBEROS)
    sshd_gssapi.write_ssh_config(client_home, "delegating", {**KERBEROS, "GSSAPIDelegateCredentials": "yes"})
    assert session_ccache(ALIAS) == ""
    assert session_ccache("delegating").startswith("FILE:/tmp/krb5cc_")


def test_no_ticket_is_one_line_saying_kinit(sshd_gssapi: SSHServer, ccache: Path, client_home: Path) -> None:
    sshd_gssapi.write_ssh_config(client_home, ALIAS, KERBEROS)
    with pytest.raises(AuthenticationError) as failure:
        connect(ALIAS, prompt=lambda text, secret: pytest.fail(f"asked {text!r}"))
    message = str(failure.value)
    assert f"auth: authentication failed as {sshd_gssapi.user}@{sshd_gssapi.host}: no Kerberos ticket (" in message
    assert "): run kinit" in message
    assert "\n" not in message


def test_an_expired_ticket_is_one_line_saying_kinit(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path,
                                                    client_home: Path) -> None:
    kdc.kinit(ccache, lifetime="2s")
    time.sleep(3)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, KERBEROS)
    with pytest.raises(AuthenticationError,
                       match=r"authentication failed as \S+: the Kerberos ticket expired: run kinit"):
        connect(ALIAS, interactive=False)


def test_without_kerberos_support_one_line_says_what_to_install(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path,
                                                                client_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    kdc.kinit(ccache)
    monkeypatch.setitem(sys.modules, "spnego", None)  # the package is absent (import raises ImportError)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, KERBEROS)
    with pytest.raises(AuthenticationError, match=r"authentication failed as \S+: Kerberos support is not "
                                                  r"installed \(no module spnego\): pip install "
                                                  r"'remote-http-launcher\[kerberos\]'"):
        connect(ALIAS, interactive=False)


def test_kerberos_on_for_every_host_does_not_lead_the_error_of_a_host_without(
        sshd: SSHServer, client_home: Path, ccache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's /etc/ssh/ssh_config says `GSSAPIAuthentication yes` for every host: without a ticket, a
    host that takes no Kerberos fails as before, Kerberos only listed as skipped."""
    system = client_home / "system_ssh_config"
    system.write_text("Host *\n    GSSAPIAuthentication yes\n")
    monkeypatch.setattr("remote_http_launcher.ssh.config.SYSTEM_SSH_CONFIG", system)
    sshd.start()
    config = sshd.write_ssh_config(client_home, ALIAS, {"IdentityFile": "none"})
    config.write_text(config.read_text().replace("GSSAPIAuthentication no", ""))
    with pytest.raises(AuthenticationError, match=r"authentication failed as \S+ \(tried: gssapi-with-mic "
                                                  r"\(skipped: no ticket\), agent \(0 keys\),"):
        connect(ALIAS, interactive=False)


def test_kerberos_off_is_not_tried(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path, client_home: Path) -> None:
    """OpenSSH's default is GSSAPIAuthentication no: a ticket alone does not log in."""
    kdc.kinit(ccache)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, {"IdentityFile": "none"})
    with pytest.raises(AuthenticationError, match="authentication failed"):
        connect(ALIAS, interactive=False)


@pytest.mark.parametrize("keeper", [{}, {"connection_persist": 0}], ids=["broker", "keeper"])
def test_launch_reconnect_tunnel_and_stop_with_a_ticket(sshd_gssapi: SSHServer, kdc: KDC, ccache: Path,
                                                       remote_demo: str, client_home: Path, rhl_dir: Path,
                                                       request: pytest.FixtureRequest, keeper: dict[str, Any]) -> None:
    """The keeper and the broker log in again with the same ticket cache (KRB5CCNAME)."""
    kdc.kinit(ccache)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, KERBEROS)
    sshd_gssapi.run(f"cp {remote_demo} ~/krb_demo.py")
    config = demo_config(sshd_gssapi, f"{sshd_gssapi.home}/krb_demo.py", node_key("krb-", request.node.name),
                         tunnel=True, network_interface="127.0.0.1", **keeper)
    try:
        payload = run(config)
        assert run(config) == payload
        assert status(config)["client"]["tunnel_up"] is True
        stop(config)
        assert status(config)["status"] != "running"
    finally:
        sshd_gssapi.run(CLEANUP)
