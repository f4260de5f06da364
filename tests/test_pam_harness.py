"""Proves the PAM servers of tests/sshd.py (sshd_2fa, sshd_password) with plain paramiko.

The launcher's 2-factor tests rely on what is pinned here: the exact prompts
the servers send (and in how many rounds), that a wrong password or code is
refused, that a code cannot be used twice and that totp() still makes every
login work, that the servers really use their own PAM services (never
/etc/pam.d/sshd), and that write_ssh_config() gives a client config the
OpenSSH client logs in with.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest

from tests import sshd as harness

if TYPE_CHECKING:
    from tests.sshd import PamSSHServer, SSHAccount

pytest_plugins = ["tests.sshd"]

Round = tuple[str, str, list[tuple[str, bool]]]  # (name, instruction, [(prompt, echo)]) of one INFO_REQUEST
Handler = Callable[[str, str, list[tuple[str, bool]]], list[str]]

# What the servers send, INFO_REQUEST by INFO_REQUEST: pam_unix's prompt, pam_oath's prompt (with the
# login name), each alone with empty name and instruction, then an empty request once PAM has said yes.
PASSWORD_ROUND: Round = ("", "", [("Password: ", False)])
DONE_ROUND: Round = ("", "", [])


def otp_round(user: str) -> Round:
    return ("", "", [(f"One-time password (OATH) for `{user}': ", False)])


def login(server: PamSSHServer, answers: Callable[[str], str]) -> tuple[bool, list[Round]]:
    """One keyboard-interactive login with paramiko.Transport: (accepted?, the rounds the server sent)."""
    rounds: list[Round] = []

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        rounds.append((title, instructions, list(prompts)))
        return [answers(text) for text, _ in prompts]

    transport = paramiko.Transport((server.host, server.port))
    try:
        transport.start_client(timeout=10)
        assert transport.get_remote_server_key() == server.host_pubkey
        try:
            transport.auth_interactive(server.user, handler)
        except paramiko.AuthenticationException:
            return False, rounds
        assert transport.is_authenticated()
        session = transport.open_session(timeout=10)
        session.exec_command("id -un")
        assert session.makefile("rb").read().decode().strip() == server.user
        assert session.recv_exit_status() == 0
        return True, rounds
    finally:
        transport.close()


def answering(server: PamSSHServer, *, password: str | None = None, code: str | None = None) -> Callable[[str], str]:
    """Answers 'Password: ' with the password and the OTP prompt with a fresh totp() (or the values given)."""

    def answer(prompt: str) -> str:
        if prompt == "Password: ":
            return server.password if password is None else password
        assert prompt == f"One-time password (OATH) for `{server.user}': ", prompt
        return server.totp() if code is None else code

    return answer


# ---------------------------------------------------------------- the 2-factor host


def test_2fa_password_then_code_logs_in(sshd_2fa: PamSSHServer) -> None:
    ok, rounds = login(sshd_2fa, answering(sshd_2fa))
    assert ok, sshd_2fa.log_text()[-2000:]
    assert rounds == [PASSWORD_ROUND, otp_round(sshd_2fa.user), DONE_ROUND]
    assert sshd_2fa.prompts == ("Password: ", f"One-time password (OATH) for `{sshd_2fa.user}': ")
    assert "Accepted keyboard-interactive/pam for " + sshd_2fa.user in sshd_2fa.log_text()


def test_2fa_wrong_code_is_refused(sshd_2fa: PamSSHServer) -> None:
    assert sshd_2fa.oath is not None
    step, _ = sshd_2fa.oath.now()
    window = set(sshd_2fa.oath.codes(step - 4, 9))
    wrong = next(c for c in (f"{n:06d}" for n in range(1000)) if c not in window)
    ok, rounds = login(sshd_2fa, answering(sshd_2fa, code=wrong))
    assert not ok
    assert rounds == [PASSWORD_ROUND, otp_round(sshd_2fa.user)]  # the password passed, the code did not


def test_2fa_wrong_password_is_refused_before_the_code(sshd_2fa: PamSSHServer) -> None:
    ok, rounds = login(sshd_2fa, answering(sshd_2fa, password="wrong-" + sshd_2fa.password))
    assert not ok
    assert rounds == [PASSWORD_ROUND]  # pam_unix is requisite: no code is asked for


def test_2fa_code_cannot_be_used_twice_but_totp_always_gives_a_fresh_one(sshd_2fa: PamSSHServer) -> None:
    assert sshd_2fa.oath is not None
    code = sshd_2fa.totp()
    assert login(sshd_2fa, answering(sshd_2fa, code=code))[0]
    assert sshd_2fa.oath.last_used() == code  # pam_oath's record of the last code accepted
    ok, rounds = login(sshd_2fa, answering(sshd_2fa, code=code))
    assert not ok and rounds == [PASSWORD_ROUND, otp_round(sshd_2fa.user)]
    # More logins than the window has later codes (window=3: 4 per 30 s), all within seconds.
    start = time.monotonic()
    for _ in range(sshd_2fa.oath.window + 3):
        ok, _ = login(sshd_2fa, answering(sshd_2fa))
        assert ok, sshd_2fa.log_text()[-2000:]
    assert time.monotonic() - start < 10


def test_2fa_connect_helper_and_stop_start(sshd_2fa: PamSSHServer) -> None:
    client = sshd_2fa.connect()
    transport = client.get_transport()
    assert transport is not None and transport.is_authenticated()
    try:
        sshd_2fa.stop()  # finds the connection's processes by the program name (comm), not 'sshd'
        deadline = time.monotonic() + 10
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not transport.is_active(), "stop() should drop live connections"
    finally:
        client.close()
        sshd_2fa.start()
    with sshd_2fa.connect() as again:
        _, stdout, _ = again.exec_command("id -un", timeout=10)
        assert stdout.read().decode().strip() == sshd_2fa.user


# ---------------------------------------------------------------- the password-only host


def test_password_host_prompts_once(sshd_password: PamSSHServer) -> None:
    ok, rounds = login(sshd_password, answering(sshd_password))
    assert ok, sshd_password.log_text()[-2000:]
    assert rounds == [PASSWORD_ROUND, DONE_ROUND]
    assert sshd_password.prompts == ("Password: ",)
    ok, rounds = login(sshd_password, answering(sshd_password, password="wrong-" + sshd_password.password))
    assert not ok and rounds == [PASSWORD_ROUND]
    with pytest.raises(RuntimeError, match="password-only"):
        sshd_password.totp()


def test_password_host_also_takes_the_password_method(sshd_password: PamSSHServer) -> None:
    with paramiko.Transport((sshd_password.host, sshd_password.port)) as transport:
        transport.start_client(timeout=10)
        transport.auth_password(sshd_password.user, sshd_password.password, fallback=False)
        assert transport.is_authenticated()


def test_no_public_keys_anywhere(sshd_2fa: PamSSHServer, sshd_password: PamSSHServer) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(sshd_2fa.client_key))
    for server, allowed in ((sshd_2fa, ["keyboard-interactive"]), (sshd_password, None)):
        with paramiko.Transport((server.host, server.port)) as transport:
            transport.start_client(timeout=10)
            with pytest.raises(paramiko.BadAuthenticationType) as refused:
                transport.auth_publickey(server.user, key)
            if allowed is not None:
                assert refused.value.allowed_types == allowed
            assert "publickey" not in refused.value.allowed_types


# ---------------------------------------------------------------- PAM services, files, client config


def test_own_pam_services_named_after_the_program(sshd_2fa: PamSSHServer, sshd_password: PamSSHServer) -> None:
    system = Path("/etc/pam.d/sshd")
    before = hashlib.sha256(system.read_bytes()).hexdigest() if system.exists() else None
    for server in (sshd_2fa, sshd_password):
        assert server.pam_file == Path("/etc/pam.d") / server.pam_service
        assert Path(server.sshd_bin).name == server.pam_service
        assert os.readlink(server.sshd_bin) == harness.SSHD_BIN
        assert server._proc is not None
        assert Path(f"/proc/{server._proc.pid}/comm").read_text().strip() == server.pam_service
        text = server.pam_file.read_text()
        assert ("pam_oath.so" in text) == (server is sshd_2fa)
    # The OTP prompt (see the login tests) can only come from our file: the system's service has no pam_oath.
    if system.exists():
        assert "pam_oath" not in system.read_text()
        assert hashlib.sha256(system.read_bytes()).hexdigest() == before
    assert sshd_2fa.oath is not None
    users = sshd_2fa.oath.users_file
    info = users.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
    assert users.read_text().split()[:4] == ["HOTP/T30", sshd_2fa.user, "-", sshd_2fa.oath.secret_hex]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_openssh_client_logs_in_with_written_config(sshd_2fa: PamSSHServer, tmp_path: Path) -> None:
    config = sshd_2fa.write_ssh_config(tmp_path, alias="twofactor")
    cfg = paramiko.SSHConfig.from_path(str(config)).lookup("twofactor")
    assert cfg["identityfile"][0] == "none" and cfg["pubkeyauthentication"] == "no"
    assert (tmp_path / ".ssh" / "known_hosts").read_text().splitlines() == [sshd_2fa.host_key_line]
    askpass = tmp_path / "askpass"  # answers OpenSSH's prompts (SSH_ASKPASS_REQUIRE=force) from the environment
    askpass.write_text('#!/bin/sh\ncase "$1" in *One-time*) echo "$RHL_CODE";; *) echo "$RHL_PASSWORD";; esac\n')
    askpass.chmod(0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "SSH_ASKPASS": str(askpass),
           "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0", "RHL_PASSWORD": sshd_2fa.password,
           "RHL_CODE": sshd_2fa.totp()}
    proc = subprocess.run(["ssh", "-F", str(config), "-o", "NumberOfPasswordPrompts=1", "twofactor", "id -un"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == sshd_2fa.user


def test_launch_and_close_leave_nothing_behind(sshd_account: SSHAccount) -> None:
    # A stale registration of a session that died: swept by the next launch.
    stale = harness.PAM_STATE_DIR / "rhl-pw-000000"
    stale.mkdir(mode=0o700, parents=True, exist_ok=True)
    (stale / "owner").write_text("999999999 1")
    stale_pam = harness.PAM_D / "rhl-pw-000000"
    stale_pam.write_text("auth required pam_deny.so\n")
    orphan_pam = harness.PAM_D / "rhl-2fa-000000"
    orphan_pam.write_text("auth required pam_deny.so\n")
    server = harness.launch_pam_sshd(sshd_account, "2fa")
    try:
        assert not stale.exists() and not stale_pam.exists() and not orphan_pam.exists()
        assert server.pam_file is not None and server.pam_file.exists()
        assert server.oath is not None and server.oath.users_file.exists()
        assert login(server, answering(server))[0]
    finally:
        server.close()
    assert not server.pam_file.exists()
    assert not (harness.PAM_STATE_DIR / server.pam_service).exists()
    assert not os.path.lexists(server.sshd_bin)
    assert not server.is_running()
    server.close()  # idempotent


def test_failed_launch_removes_its_pam_files(sshd_account: SSHAccount, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []

    def fail(account: SSHAccount, label: str, *args: object, **kwargs: object) -> harness.SSHServer:
        started.append(label)
        assert (harness.PAM_D / label).exists() and (harness.PAM_STATE_DIR / label / "users.oath").exists()
        raise RuntimeError("sshd exited during startup")

    monkeypatch.setattr(harness, "launch_sshd", fail)
    with pytest.raises(RuntimeError, match="during startup"):
        harness.launch_pam_sshd(sshd_account, "2fa")
    [service] = started
    assert not (harness.PAM_D / service).exists()
    assert not (harness.PAM_STATE_DIR / service).exists()
    assert not os.path.lexists(sshd_account.base / "sbin" / service)


# ---------------------------------------------------------------- OathToken without a server


@pytest.fixture
def token(tmp_path: Path) -> harness.OathToken:
    if shutil.which("oathtool") is None:
        pytest.skip("oathtool not installed (apt-get install -y oathtool)")
    users = tmp_path / "users.oath"
    tok = harness.OathToken("alice", "3132333435363738393031323334353637383930", users)  # RFC 6238's secret
    users.write_text(tok.line())
    return tok


def _fake_clock(tok: harness.OathToken, start: float) -> list[float]:
    now = [start]
    tok.clock = lambda: now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    tok.sleep = sleep
    return now


def _record(tok: harness.OathToken, code: str) -> None:
    """The users file as pam_oath leaves it after accepting ``code``."""
    tok.users_file.write_text(f"HOTP/T30\talice\t-\t{tok.secret_hex}\t0\t{code}\t2026-01-01T00:00:00L\n")


def test_token_matches_rfc6238(token: harness.OathToken) -> None:
    assert token.code_at(1) == "287082"  # RFC 6238 appendix B, T = 59 s, last 6 of 94287082
    assert token.codes(0, 3) == ["755224", "287082", "359152"]
    _fake_clock(token, 59.0)
    assert token.code() == "287082"


def test_token_takes_the_next_step_after_a_used_code(token: harness.OathToken) -> None:
    now = _fake_clock(token, 1000 * 30 + 10.0)
    _record(token, token.code_at(1000))
    assert token.code() == token.code_at(1001)
    _record(token, token.code_at(1001))
    assert token.code() == token.code_at(1002)
    assert now[0] == 1000 * 30 + 10.0  # no waiting


def test_token_resets_the_replay_record_when_the_window_is_used_up(token: harness.OathToken) -> None:
    now = _fake_clock(token, 1000 * 30 + 10.0)
    _record(token, token.code_at(1000 + token.window))
    assert token.code() == token.code_at(1000)
    assert token.users_file.read_text() == token.line()  # record gone, nothing else touched
    assert now[0] == 1000 * 30 + 10.0
    _record(token, token.code_at(1000 + token.window))
    # reset=False: waits one step, until the step after the recorded one is within the window
    assert token.code(reset=False) == token.code_at(1000 + token.window + 1)
    assert 1001 * 30 < now[0] < 1001 * 30 + 1
    assert token.last_used() == token.code_at(1000 + token.window)  # record untouched


def test_token_waits_out_the_edge_only_with_window_0(token: harness.OathToken) -> None:
    now = _fake_clock(token, 1000 * 30 + 28.5)  # 1.5 s left
    assert token.code() == token.code_at(1000)  # window 3: valid for 3 more steps, no wait
    assert now[0] == 1000 * 30 + 28.5
    token.window = 0
    assert token.code() == token.code_at(1001)
    assert 1001 * 30 <= now[0] < 1001 * 30 + 1
