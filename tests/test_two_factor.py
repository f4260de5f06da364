"""Password + one-time-code logins (a real PAM stack: pam_unix, then pam_oath) through the launcher.

The servers come from tests/sshd.py (`sshd_2fa`, `sshd_password`). Every question reaches the
`prompt=` function once, names user@host, and no password or code is left in any file the launcher
writes or on the tunnel keeper's command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import AuthenticationError, run
from remote_http_launcher.commands.stop import stop_keeper
from tests.conftest import alive, wait_for
from tests.linkproxy import LinkProxy, answering_within, refused_at_once, through
from tests.ssh_client import demo_config, node_key, remote_state, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import PamSSHServer

ALIAS = "cluster"
CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"')


class Answers:
    """Answers a 2-factor login like a person: the password, then a fresh code; records each question."""

    def __init__(self, server: PamSSHServer, passwords: list[str] | None = None) -> None:
        self.server = server
        self.passwords = passwords or [server.password]
        self.asked: list[tuple[str, bool]] = []
        self.given: list[str] = []

    def __call__(self, text: str, secret: bool) -> str:
        self.asked.append((text, secret))
        if text.rstrip().endswith("Password:"):
            answer = self.passwords.pop(0) if len(self.passwords) > 1 else self.passwords[0]
        elif "One-time password" in text:
            answer = self.server.totp()
        else:
            raise AssertionError(f"unexpected question {text!r}")
        self.given.append(answer)
        return answer


@pytest.fixture
def cleanup(rhl_dir: Path) -> Iterator[None]:
    yield
    client = rhl_dir / "client"
    for lock in client.glob("*.keeper.lock"):
        stop_keeper(lock.name.removesuffix(".keeper.lock"), client, timeout=3)


def config_for(server: PamSSHServer, remote_demo: str, client_home: Path, name: str, *, tunnel: bool) -> dict[str, Any]:
    server.write_ssh_config(client_home, ALIAS)
    where: dict[str, Any] = {"tunnel": True, "network_interface": "127.0.0.1"} if tunnel else {}
    return demo_config(server, remote_demo, node_key("2fa-", name), ssh_hostname=ALIAS, **where)


def secrets_left_in(paths: list[Path], secrets: list[str]) -> list[str]:
    return [f"{path}: {secret[:2]}..." for path in paths if path.is_file()
            for secret in secrets if secret.encode() in path.read_bytes()]


@pytest.mark.parametrize("tunnel", [False, True], ids=["direct", "tunnel"])
def test_password_then_code_once_each(sshd_2fa: PamSSHServer, remote_demo: str, client_home: Path, rhl_dir: Path,
                                      cleanup: None, request: pytest.FixtureRequest, tunnel: bool) -> None:
    server = sshd_2fa
    config = config_for(server, remote_demo, client_home, request.node.name, tunnel=tunnel)
    answers = Answers(server)
    try:
        payload = run(config, prompt=answers)
        login = f"({server.user}@{server.host})"
        assert answers.asked == [(f"{login} Password: ", True),
                                 (f"{login} One-time password (OATH) for `{server.user}': ", True)]
        assert run(config, prompt=answers) == payload and len(answers.asked) == 2  # reconnecting logs in no more
        files = list(rhl_dir.rglob("*"))
        if tunnel:
            keeper = Path(f"/proc/{payload['keeper_pid']}")
            files += [keeper / "cmdline", keeper / "environ"]
        assert secrets_left_in(files, answers.given) == []
    finally:
        server.run(CLEANUP)


def test_a_wrong_password_then_the_right_one(sshd_2fa: PamSSHServer, remote_demo: str, client_home: Path,
                                             cleanup: None, request: pytest.FixtureRequest) -> None:
    server = sshd_2fa
    config = config_for(server, remote_demo, client_home, request.node.name, tunnel=True)
    answers = Answers(server, passwords=["not the password", server.password])
    try:
        run(config, prompt=answers)
    finally:
        server.run(CLEANUP)
    login = f"({server.user}@{server.host})"
    assert [text for text, _ in answers.asked] == [
        f"{login} Password: ",
        f"Permission denied, please try again.\n{login} Password: ",
        f"{login} One-time password (OATH) for `{server.user}': "]


def test_a_password_only_host_asks_once(sshd_password: PamSSHServer, remote_demo: str, client_home: Path,
                                        cleanup: None, request: pytest.FixtureRequest) -> None:
    server = sshd_password
    config = config_for(server, remote_demo, client_home, request.node.name, tunnel=True)
    answers = Answers(server)
    try:
        run(config, prompt=answers)
    finally:
        server.run(CLEANUP)
    assert answers.asked == [(f"({server.user}@{server.host}) Password: ", True)]


def test_no_way_to_answer_is_a_clear_error_in_a_script(sshd_2fa: PamSSHServer, remote_demo: str, client_home: Path,
                                                       tmp_path: Path, request: pytest.FixtureRequest) -> None:
    server = sshd_2fa
    config = config_for(server, remote_demo, client_home, request.node.name, tunnel=True)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", str(path)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: ssh {ALIAS} ({server.host}:{server.port}): auth: authentication failed")
    assert "keyboard-interactive skipped: no way to ask" in error and "pass prompt= to run()" in error
    with pytest.raises(AuthenticationError, match="keyboard-interactive skipped: no way to ask"):
        run(config)  # the API in a script: pytest's stdin is no terminal


def test_the_broker_asks_once_for_every_command(sshd_2fa: PamSSHServer, remote_demo: str, client_home: Path,
                                                rhl_dir: Path, cleanup: None, request: pytest.FixtureRequest) -> None:
    """Two services (one tunneled), status, logs, stop and a relaunch: one password, one code."""
    from remote_http_launcher import logs, status, stop

    server = sshd_2fa
    tunneled = config_for(server, remote_demo, client_home, request.node.name, tunnel=True)
    direct = config_for(server, remote_demo, client_home, request.node.name + "-direct", tunnel=False)
    answers = Answers(server)
    accepted = f"Accepted keyboard-interactive/pam for {server.user}"
    before = server.log_text().count(accepted)
    try:
        for config in (tunneled, direct):
            run(config, prompt=answers)
            assert status(config, prompt=answers)["status"] == "running"
            logs(config, prompt=answers)
        stop(direct, prompt=answers)
        run(direct, prompt=answers)
        assert status(tunneled, prompt=answers)["client"]["tunnel_up"] is True
    finally:
        server.run(CLEANUP)
    assert len(answers.asked) == 2, answers.asked
    assert server.log_text().count(accepted) - before == 1
    assert secrets_left_in(list(rhl_dir.rglob("*")), answers.given) == []


# ---------------------------------------------------------------- a lost link on a second-factor host

@pytest.fixture
def proxied_2fa(sshd_2fa: PamSSHServer, client_home: Path) -> Iterator[LinkProxy]:
    """ALIAS reaches the 2-factor server through a LinkProxy (which a test can cut)."""
    with LinkProxy((sshd_2fa.host, sshd_2fa.port)) as proxy:
        sshd_2fa.write_ssh_config(client_home, ALIAS, through(proxy, sshd_2fa))
        yield proxy
    sshd_2fa.run(CLEANUP)


def proxied_config(server: PamSSHServer, remote_demo: str, name: str, **fields: Any) -> dict[str, Any]:
    return demo_config(server, remote_demo, node_key("2fa-", name), ssh_hostname=ALIAS, tunnel=True,
                       network_interface="127.0.0.1", watchdog_interval=1, **fields)


def test_a_lost_link_waits_for_the_next_command_to_log_in(sshd_2fa: PamSSHServer, proxied_2fa: LinkProxy,
                                                          remote_demo: str, rhl_dir: Path, cleanup: None,
                                                          request: pytest.FixtureRequest) -> None:
    """The broker's re-login needs a password and a code: it keeps every tunnel's local port (refusing at
    once) and waits, which `connections` shows; the next command for the host (`status`) asks once and
    hands the login to the broker, which restores both tunnels on their ports with nothing relaunched."""
    from remote_http_launcher import status
    from remote_http_launcher.broker.control import connections

    server = sshd_2fa
    configs = [proxied_config(server, remote_demo, request.node.name + suffix) for suffix in ("", "-2")]
    answers = Answers(server)
    payloads = [run(config, prompt=answers) for config in configs]
    services = [remote_state(server, config["key"]) for config in configs]
    first_login = list(answers.asked)
    assert len(first_login) == 2 and payloads[0]["keeper_pid"] == payloads[1]["keeper_pid"]

    def links() -> list[str | None]:
        return [entry["link"] for entry in connections() if entry["host"] == ALIAS]

    proxied_2fa.cut()
    wait_for(lambda: links() == ["waiting for login"], 30, "the broker to wait for a login")
    for payload in payloads:
        refused_at_once(payload["port"])
    with pytest.raises(AuthenticationError, match=r"waits for a login.*no way to ask here"):
        status(configs[0])  # pytest's stdin is no terminal: nowhere to ask, and the broker goes on waiting
    assert links() == ["waiting for login"] and len(answers.asked) == 2
    entry = status(configs[0], prompt=answers)
    assert answers.asked[2:] == first_login  # asked once more: the password, then a code
    assert entry["status"] == "running" and entry["client"]["link"] == "up"
    assert links() == ["up"]
    for config, payload, service in zip(configs, payloads, services, strict=True):
        assert answering_within(payload["port"], 30) < 30
        assert remote_state(server, config["key"]) == service
        assert alive(payload["keeper_pid"])
    assert secrets_left_in(list(rhl_dir.rglob("*")), answers.given) == []


def test_a_keeper_waiting_for_a_login_is_replaced_on_its_local_port(
        sshd_2fa: PamSSHServer, proxied_2fa: LinkProxy, remote_demo: str, rhl_dir: Path, cleanup: None,
        request: pytest.FixtureRequest) -> None:
    """Without a broker, the keeper process waits (its lock says so: `status` shows it); the next run,
    which can ask, replaces it with one logged in anew on the same local port."""
    from remote_http_launcher.commands.entries import client_entry

    server = sshd_2fa
    config = proxied_config(server, remote_demo, request.node.name, connection_persist=0)
    answers = Answers(server)
    payload = run(config, prompt=answers)
    service = remote_state(server, config["key"])
    client = rhl_dir / "client" / f"{config['key']}.json"
    proxied_2fa.cut()
    wait_for(lambda: client_entry(client, config["key"], tunnel=True)["link"] == "waiting for login", 30,
             "the keeper to wait for a login")
    refused_at_once(payload["port"])
    again = run(config, prompt=answers)
    assert again["port"] == payload["port"] and again["keeper_pid"] != payload["keeper_pid"]
    assert answering_within(again["port"], 30) < 30
    assert remote_state(server, config["key"]) == service
    wait_for(lambda: not alive(payload["keeper_pid"]), 10, "the replaced keeper to exit")
