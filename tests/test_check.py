"""`check CONFIG`: every step a launch takes, checked without launching, on this machine and against the
real test sshd (tests/sshd.py): one line per check, what to do for each failure, exit 0/1/2, `--json`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ROOT
from tests.posix import python_path
from tests.ssh_client import ALIAS, demo_config, node_key, remote_state, stop_services_script

if TYPE_CHECKING:
    from tests.kerberos import KDC
    from tests.sshd import CertSSHServer, SSHServer

CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"')


def check(config: dict[str, Any], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`check` in a subprocess, stdin not a terminal, its output in UTF-8 (the marks)."""
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": python_path(ROOT), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "remote_http_launcher", "check", str(path), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Checklist lines by check name: the mark and the detail."""
    found = {}
    for line in result.stdout.splitlines():
        if line[:1] in "✓✗·" and line[1:2] == " ":
            name, _, detail = line[2:].partition("  ")
            found[name.strip()] = f"{line[0]} {detail.strip()}"
    return found


def advice_after(result: subprocess.CompletedProcess[str], name: str) -> str:
    """The `→ ...` line under the check `name`."""
    out = result.stdout.splitlines()
    index = next(i for i, line in enumerate(out) if line[2:].split("  ", 1)[0].strip() == name)
    assert out[index + 1].strip().startswith("→ "), result.stdout
    return out[index + 1].strip()[2:]


# ---------------------------------------------------------------- this machine

def test_local_config_passes_every_check_and_changes_nothing(tmp_path: Path, rhl_dir: Path,
                                                             demo_config: Callable[..., dict[str, Any]]) -> None:
    config = demo_config()
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert found["config"] == "✓ valid, key demo-localhost"
    assert found["sh"].startswith("✓ /")
    assert found["state directory"] == f"✓ {rhl_dir / 'server'} will be created"
    assert found["workdir"] == f"✓ {config['workdir']} will be created"
    assert found["program"] == f"✓ {sys.executable}"
    assert result.stdout.rstrip().endswith("all checks passed")
    assert not rhl_dir.exists() and not Path(config["workdir"]).exists()  # nothing made, nothing launched


def test_json_has_each_check_with_outcome_and_advice(tmp_path: Path, rhl_dir: Path,
                                                     demo_config: Callable[..., dict[str, Any]]) -> None:
    result = check(demo_config(command="no-such-program-rhl --status-file {status_file}"), tmp_path, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["config_error"] is False
    [program] = [item for item in report["checks"] if item["name"] == "program"]
    assert program == {"name": "program", "outcome": "fail", "detail": "no-such-program-rhl not found",
                       "advice": "install it on the host, or give its absolute path in command"}


def test_invalid_config_is_a_failed_line_and_exit_2(tmp_path: Path, rhl_dir: Path,
                                                   demo_config: Callable[..., dict[str, Any]]) -> None:
    config = demo_config(tunel=True)
    result = check(config, tmp_path)
    assert result.returncode == 2
    assert lines(result)["config"].startswith("✗ tunel: ") and "did you mean 'tunnel'?" in result.stdout
    assert list(lines(result)) == ["config"]  # nothing else can be checked
    assert result.stdout.rstrip().endswith("1 check failed")


def test_workdir_that_cannot_be_created_fails_with_the_reason(tmp_path: Path, rhl_dir: Path,
                                                             demo_config: Callable[..., dict[str, Any]]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = check(demo_config(workdir=str(blocker / "sub")), tmp_path)
    assert result.returncode == 1
    assert lines(result)["workdir"] == f"✗ {blocker}/sub cannot be created: {blocker} is not a writable directory"
    assert advice_after(result, "workdir") == "choose a workdir the (SSH) user may create, or create it"


def test_missing_conda_environment_fails(tmp_path: Path, rhl_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        demo_config: Callable[..., dict[str, Any]]) -> None:
    base = tmp_path / "conda"  # a conda installation as the launcher finds one: CONDA_EXE, conda.sh, envs/
    (base / "etc" / "profile.d").mkdir(parents=True)
    (base / "etc" / "profile.d" / "conda.sh").write_text("")
    (base / "envs" / "present" / "conda-meta").mkdir(parents=True)
    monkeypatch.setenv("CONDA_EXE", str(base / "bin" / "conda"))
    assert lines(check(demo_config(conda="present"), tmp_path))["conda"] == \
        f"✓ environment 'present' (conda at {base})"
    result = check(demo_config(conda="absent-env"), tmp_path)
    assert result.returncode == 1
    assert lines(result)["conda"] == f"✗ conda environment 'absent-env' not found (conda at {base})"


# ---------------------------------------------------------------- over SSH, against the test sshd

@pytest.fixture
def server(sshd: SSHServer) -> Iterator[SSHServer]:
    yield sshd
    sshd.run(CLEANUP)


@pytest.fixture
def make_config(server: SSHServer, remote_demo: str, request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    return partial(demo_config, server, remote_demo, node_key("c-", request.node.name))


def test_ssh_target_resolves_logs_in_and_checks_the_host(server: SSHServer, client_home: Path, rhl_dir: Path,
                                                         make_config: Callable[..., dict[str, Any]],
                                                         tmp_path: Path) -> None:
    server.write_ssh_config(client_home, ALIAS)
    config = make_config()
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert found["ssh target"] == f"✓ {ALIAS} → {server.user}@{server.host}:{server.port}"
    assert found["reachable"].startswith(f"✓ {server.host}:{server.port} (SSH-2.0-OpenSSH")
    assert found["login methods"] == f"· agent: 0 keys; key files: {server.client_key}"
    assert found["host key"] == f"✓ known as [{server.host}]:{server.port}"
    assert found["login"].startswith(f"✓ {server.user}@{server.host} without a question")
    assert found["state directory"] == f"✓ {server.home}/.remote-http-launcher/server will be created"
    assert found["workdir"] == f"✓ {server.home}/rhl-work will be created"
    assert found["program"] == f"✓ {server.python}"
    assert remote_state(server, config["key"]) is None
    assert server.run("test -e rhl-work || test -e .remote-http-launcher/server").returncode != 0  # nothing made


def test_unknown_host_key_shows_its_fingerprint_and_what_to_do(server: SSHServer, client_home: Path, rhl_dir: Path,
                                                               make_config: Callable[..., dict[str, Any]],
                                                               tmp_path: Path) -> None:
    server.write_ssh_config(client_home, ALIAS, {"StrictHostKeyChecking": "ask"})
    known_hosts = client_home / ".ssh" / "known_hosts"
    known_hosts.write_text("")
    result = check(make_config(), tmp_path)
    assert result.returncode == 1
    assert lines(result)["host key"].startswith("✗ ") and f"SHA256:{server.host_pubkey.fingerprint[7:]}" in \
        lines(result)["host key"]
    assert advice_after(result, "host key") == ("compare the fingerprint with the server's, then run again with "
                                                "--accept-new-host-key")
    assert "login" not in lines(result) and "sh" not in lines(result)  # cannot be told before the host key
    assert known_hosts.read_text() == ""
    accepted = check(make_config(), tmp_path, "--accept-new-host-key")
    assert accepted.returncode == 0, accepted.stdout
    assert known_hosts.read_text().strip()


def test_login_that_needs_an_answer_fails_naming_user_and_host(server: SSHServer, client_home: Path, rhl_dir: Path,
                                                               make_config: Callable[..., dict[str, Any]],
                                                               tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    server.write_ssh_config(client_home, ALIAS, {"IdentityFile": str(other)})
    result = check(make_config(), tmp_path)
    assert result.returncode == 1
    found = lines(result)
    assert found["host key"].startswith("✓ ")
    assert found["login"].startswith(f"✗ ssh {ALIAS} ({server.host}:{server.port}): auth: authentication failed")
    assert "ssh-add" in advice_after(result, "login")


def test_closed_port_is_unreachable(server: SSHServer, client_home: Path, rhl_dir: Path,
                                    make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    closed = 1  # in the server's network namespace only its sshd listens
    server.write_ssh_config(client_home, ALIAS, {"Port": str(closed)})
    result = check(make_config(), tmp_path)
    assert result.returncode == 1
    assert lines(result)["reachable"].startswith(f"✗ {server.host}:{closed}: ")
    assert "host key" not in lines(result)


def test_scheduler_commands_found_on_the_login_node(server: SSHServer, client_home: Path, rhl_dir: Path,
                                                    make_config: Callable[..., dict[str, Any]],
                                                    tmp_path: Path) -> None:
    server.write_ssh_config(client_home, ALIAS)
    where = server.run("for c in sbatch squeue scancel; do command -v $c; done").stdout.split()  # slurm-client
    result = check(make_config(scheduler={"type": "slurm"}, tunnel=True), tmp_path)
    assert re.findall(r"^✓ scheduler +(\S+)$", result.stdout, re.MULTILINE) == where, result.stdout
    assert result.returncode == 0, result.stdout


def test_scheduler_commands_missing_fail_with_what_to_do(tmp_path: Path, rhl_dir: Path,
                                                         demo_config: Callable[..., dict[str, Any]]) -> None:
    empty_bin = tmp_path / "empty-bin"  # a host whose PATH, also its login shell's, has no sbatch, squeue or scancel
    empty_bin.mkdir()
    result = check_with_profile(demo_config, tmp_path, empty_bin, f"PATH={empty_bin}\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.findall(r"^✗ scheduler +(.+)$", result.stdout, re.MULTILINE) == [
        f"{name} not found on PATH ({empty_bin}) nor by the login shell (/bin/sh -l)"
        for name in ("sbatch", "squeue", "scancel")], result.stdout
    assert advice_after(result, "scheduler").startswith("run the service where the scheduler's commands are")


def test_scheduler_commands_are_found_on_the_login_shells_path(tmp_path: Path, rhl_dir: Path,
                                                               demo_config: Callable[..., dict[str, Any]]) -> None:
    empty_bin, site_bin = tmp_path / "empty-bin", tmp_path / "site bin"  # a site's directory: the profile adds it
    empty_bin.mkdir()
    site_bin.mkdir()
    for name in ("sbatch", "squeue", "scancel"):
        (site_bin / name).write_text("#!/bin/sh\n")
        (site_bin / name).chmod(0o755)
    result = check_with_profile(demo_config, tmp_path, empty_bin, f"PATH='{site_bin}':$PATH\n")
    assert re.findall(r"^✓ scheduler +(.+)$", result.stdout, re.MULTILINE) == [
        f"{site_bin}/{name}" for name in ("sbatch", "squeue", "scancel")], result.stdout


def check_with_profile(demo_config: Callable[..., dict[str, Any]], tmp_path: Path, bin_dir: Path,
                       profile: str) -> subprocess.CompletedProcess[str]:
    """`check` of a SLURM config on this machine with PATH=bin_dir, and a login shell (sh -l) reading
    `profile` as the user's ~/.profile."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text(profile)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(demo_config(scheduler={"type": "slurm"}, network_interface="0.0.0.0")))
    env = {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": python_path(ROOT), "PYTHONIOENCODING": "utf-8",
           "HOME": str(home), "SHELL": "/bin/sh"}
    return subprocess.run([sys.executable, "-m", "remote_http_launcher", "check", str(path)], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_without_marks_the_terminal_gets_words(tmp_path: Path, rhl_dir: Path,
                                               demo_config: Callable[..., dict[str, Any]]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(demo_config()))
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": python_path(ROOT)}
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher", "check", str(path)], env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok   config"), result.stdout


# ---------------------------------------------------------------- certificates and Kerberos

UTC_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def test_a_certificate_shows_its_principals_and_validity(sshd_cert: CertSSHServer, client_home: Path, rhl_dir: Path,
                                                         remote_demo: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    """Against the sshd that takes only certificates: the certificate's line says for whom and until when."""
    sshd_cert.certify(client_home / "certs" / "c-cert.pub", principals=f"{sshd_cert.user},other")
    sshd_cert.write_ssh_config(client_home, ALIAS, {"CertificateFile": "~/certs/c-cert.pub"})
    result = check(demo_config(sshd_cert, remote_demo, node_key("c-", request.node.name)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert re.fullmatch(rf"✓ ~/certs/c-cert\.pub: for {sshd_cert.user}, other, valid until {UTC_TIME}",
                        found["certificate"]), found
    assert found["login"].startswith("✓ ")


def test_an_expired_certificate_fails_with_when_and_what_to_do(sshd_cert: CertSSHServer, client_home: Path,
                                                               rhl_dir: Path, remote_demo: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    sshd_cert.certify(client_home / "old-cert.pub", validity="20200101:20200102")
    sshd_cert.write_ssh_config(client_home, ALIAS, {"CertificateFile": "~/old-cert.pub"})
    result = check(demo_config(sshd_cert, remote_demo, node_key("c-", request.node.name)), tmp_path)
    assert result.returncode == 1
    found = lines(result)
    assert found["certificate"] == "✗ certificate ~/old-cert.pub expired at 2020-01-02 00:00:00 UTC"
    assert advice_after(result, "certificate").startswith("get a new certificate from your site's certificate "
                                                          "authority (sshproxy, Vault, step ...)")
    assert found["login"].startswith("✗ ")


@pytest.fixture
def kerberos_env(kdc: KDC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test realm's KRB5_CONFIG and an empty credential cache (KRB5CCNAME) for the check's process."""
    ccache = tmp_path / "krb5cc"
    monkeypatch.setenv("KRB5_CONFIG", str(kdc.config))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{ccache}")
    return ccache


def test_a_kerberos_ticket_shows_its_principal_and_expiry(sshd_gssapi: SSHServer, kdc: KDC, kerberos_env: Path,
                                                          client_home: Path, rhl_dir: Path, remote_demo: str,
                                                          tmp_path: Path, request: pytest.FixtureRequest) -> None:
    kdc.kinit(kerberos_env)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, {"GSSAPIAuthentication": "yes", "IdentityFile": "none"})
    result = check(demo_config(sshd_gssapi, remote_demo, node_key("c-", request.node.name)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(rf"✓ {re.escape(kdc.principal)}, valid until {UTC_TIME}; gets one for "
                        rf"host/{re.escape(sshd_gssapi.host)}", lines(result)["Kerberos"]), result.stdout


@pytest.mark.parametrize("expired", [False, True], ids=["none", "expired"])
def test_no_or_an_expired_kerberos_ticket_fails_saying_kinit(sshd_gssapi: SSHServer, kdc: KDC, kerberos_env: Path,
                                                             client_home: Path, rhl_dir: Path, remote_demo: str,
                                                             tmp_path: Path, request: pytest.FixtureRequest,
                                                             expired: bool) -> None:
    if expired:
        kdc.kinit(kerberos_env, lifetime="2s")
        time.sleep(3)
    sshd_gssapi.write_ssh_config(client_home, ALIAS, {"GSSAPIAuthentication": "yes", "IdentityFile": "none"})
    result = check(demo_config(sshd_gssapi, remote_demo, node_key("c-", request.node.name)), tmp_path)
    assert result.returncode == 1
    expected = "✗ the Kerberos ticket expired" if expired else "✗ no Kerberos ticket (No Kerberos credentials"
    assert lines(result)["Kerberos"].startswith(expected), result.stdout
    assert advice_after(result, "Kerberos") == "run kinit"


def test_a_method_the_login_does_without_is_no_failure(server: SSHServer, kerberos_env: Path, client_home: Path,
                                                       rhl_dir: Path, make_config: Callable[..., dict[str, Any]],
                                                       tmp_path: Path) -> None:
    """Debian's /etc/ssh/ssh_config says `GSSAPIAuthentication yes` for every host: without a ticket, a
    host the key logs in to still passes; the Kerberos line only informs."""
    config = server.write_ssh_config(client_home, ALIAS)
    config.write_text(config.read_text().replace("GSSAPIAuthentication no", "GSSAPIAuthentication yes"))
    result = check(make_config(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert found["Kerberos"].startswith("· no Kerberos ticket (") and \
        found["Kerberos"].endswith("(the login works without it)")


def test_the_kerberos_line_names_the_servers_principal_as_the_login_picks_it(
        sshd_gssapi_localhost: SSHServer, kdc: KDC, kerberos_env: Path, client_home: Path, rhl_dir: Path,
        remote_demo: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """127.0.0.1, whose principal is host/localhost: by the configured name no ticket is had (what to check
    is said); with GSSAPITrustDNS yes the reverse name gets one."""
    kdc.kinit(kerberos_env)
    server = sshd_gssapi_localhost
    config = demo_config(server, remote_demo, node_key("c-", request.node.name))
    server.write_ssh_config(client_home, ALIAS, {"GSSAPIAuthentication": "yes", "IdentityFile": "none"})
    result = check(config, tmp_path)
    assert result.returncode == 1
    assert re.fullmatch(rf"✗ {re.escape(kdc.principal)}, valid until {UTC_TIME}; no ticket for host/127\.0\.0\.1: "
                        r".*not found in Kerberos database", lines(result)["Kerberos"]), result.stdout
    assert advice_after(result, "Kerberos") == ("the server's principal is host/NAME: check HostName, "
                                                "GSSAPIServerIdentity and GSSAPITrustDNS in ~/.ssh/config")
    (client_home / ".ssh" / "config").unlink()
    server.write_ssh_config(client_home, ALIAS, {"GSSAPIAuthentication": "yes", "IdentityFile": "none",
                                                 "GSSAPITrustDNS": "yes"})
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stdout
    assert lines(result)["Kerberos"].endswith("; gets one for host/localhost")
