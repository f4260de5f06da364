"""Servers whose authorized_keys force the original's rhl-guard (0.4.5): only its rhl-* helpers run there.

The guard refuses `sh` and SFTP but leaves port forwarding alone; the
launcher notices its refusal on the first step and then works through the
helpers (hosts/guarded.py). The servers here are more sshds for the test
account whose AuthorizedKeysFile forces the real `rhl-guard` from PyPI
(tests/interop.py installs it), once with `--clear-policy seamless` and once
with `--data-roots FILE`; the service is a stand-in named `hashserver` (the
guard's service whitelist checks only the program's name) that runs the
demo service. Each test is also shown to fail without hosts/guarded.py: the
first SFTP step's error was all one got.
"""

from __future__ import annotations

import json
import shlex
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import HostError, logs, run, status, stop
from remote_http_launcher.commands.listing import list_services
from remote_http_launcher.connect import open_target
from tests.conftest import alive, cli
from tests.ssh_client import ALIAS, node_key, remote_state, stop_services_script
from tests.sshd import _in_namespace, launch_sshd

if TYPE_CHECKING:
    from tests.interop import Original
    from tests.sshd import SSHAccount, SSHServer

pytest_plugins = ["tests.interop"]

STAND_IN = "hashserver"
WORKDIR = "rhl-guard-work"  # in the account's home
ROOTS_FILE = "rhl-data-roots"  # in the account's home: --data-roots allows WORKDIR only
CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME"/rhl-guard-*')
POLICIES = {"seamless": "--clear-policy seamless", "data-roots": f"--data-roots ~/{ROOTS_FILE}"}


def guarded_sshd(account: SSHAccount, original: Original, policy: str) -> Iterator[SSHServer]:
    """An sshd for the test account whose key is forced through `rhl-guard POLICY` as 0.4.5's README
    installs it, the original's venv first on PATH (as an administrator's conda-base install would be)."""
    keys = account.base / "keys" / f"authorized_keys_{policy}"
    command = f"PATH={original.venv}/bin:$PATH exec rhl-guard {POLICIES[policy]}"
    keys.write_text(f'command="{command}" {Path(f"{account.client_key}.pub").read_text()}')
    keys.chmod(0o644)
    yield from _in_namespace(account, lambda ns: launch_sshd(
        account, f"guarded-{policy}", ns, config_overrides={"AuthorizedKeysFile": str(keys)}))


@pytest.fixture(scope="module")
def stand_in(original: Original, remote_demo: str) -> None:
    """The stand-in service in the original's venv: a `hashserver` that runs the demo service."""
    path = Path(original.venv, "bin", STAND_IN)
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(original.server.python)} {shlex.quote(remote_demo)} \"$@\"\n")
    path.chmod(0o755)
    original.write(ROOTS_FILE, f"# the workdirs the guard allows\n~/{WORKDIR}\n")


@pytest.fixture(scope="module", params=list(POLICIES))
def policy(request: pytest.FixtureRequest) -> str:
    """Each test runs under both path policies of 0.4.5's README."""
    return str(request.param)


@pytest.fixture(scope="module")
def guarded(policy: str, sshd_account: SSHAccount, original: Original, stand_in: None) -> Iterator[SSHServer]:
    yield from guarded_sshd(sshd_account, original, policy)


@pytest.fixture
def server(guarded: SSHServer, client_home: Path, rhl_dir: Path) -> Iterator[SSHServer]:
    """The guarded server as the client's ~/.ssh/config names it (ALIAS); cleaned after the test."""
    guarded.write_ssh_config(client_home, ALIAS)
    yield guarded
    guarded.run(CLEANUP)  # as the account, not over SSH (the guard would refuse it)


@pytest.fixture
def make_config(server: SSHServer, request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """Configs of the stand-in `hashserver` on the guarded server (direct mode unless tunnel=True)."""
    key = node_key("g-", request.node.name)

    def make(*, tunnel: bool = False, **fields: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "workdir": f"~/{WORKDIR}",
            "hostname": server.host,
            "ssh_hostname": ALIAS,
            "network_interface": "127.0.0.1" if tunnel else "0.0.0.0",
            "tunnel": tunnel,
            "key": key,
            "command": f"{STAND_IN} --status-file {{status_file}} --host {{network_interface}}",
            "handshake": "healthcheck",
        }
        return {**config, **fields}

    return make


def recorded_pid(server: SSHServer, key: str) -> int | None:
    record = remote_state(server, key)
    return record["pid"] if record is not None else None


def healthy(payload: dict[str, Any]) -> bool:
    """The service answers at the address the client file gives (through the tunnel when there is one)."""
    with urllib.request.urlopen(f"http://{payload['hostname']}:{payload['port']}/healthcheck", timeout=5) as response:
        return bool(response.status == 200)


@pytest.mark.parametrize("persist", [600, 0], ids=["broker", "own-login"])
def test_up_reuse_status_logs_list_stop(server: SSHServer, original: Original,
                                        make_config: Callable[..., dict[str, Any]], persist: int) -> None:
    config = make_config(connection_persist=persist)
    key = config["key"]
    payload = run(config)
    record = remote_state(server, key)
    assert record is not None and record["status"] == "running" and payload["port"] == record["port"]
    assert healthy(payload)
    pid = record["pid"]
    assert run(config)["port"] == payload["port"] and recorded_pid(server, key) == pid  # reused

    entry = status(config)
    assert (entry["status"], entry["pid"], entry["port"]) == ("running", pid, payload["port"])
    assert f"listening on 0.0.0.0:{payload['port']}" in logs(config)
    with open_target(ALIAS, persist=persist) as host:
        listed = {item["key"]: item for item in list_services(host)}
    assert (listed[key]["status"], listed[key]["pid"]) == ("running", pid)
    row = original.ps()[key]  # the original's own view agrees
    assert (row["status"], row["live"], row["pid"]) == ("running", True, pid)

    result = stop(config)
    assert result["stopped"] and not alive(pid)
    assert key not in original.ps()  # rhl-rm removed the record
    assert status(config)["status"] == "absent"


@pytest.mark.parametrize("persist", [600, 0], ids=["broker", "keeper"])
def test_tunnel(server: SSHServer, make_config: Callable[..., dict[str, Any]], persist: int) -> None:
    """Kept by the broker, or by a tunnel keeper process of its own (whose watchdog asks rhl-pid-alive)."""
    config = make_config(tunnel=True, connection_persist=persist)
    payload = run(config)
    assert "tunneled-port" in payload and healthy(payload)
    record = remote_state(server, config["key"])
    assert record is not None and payload["tunneled-port"] == record["port"]
    again = run(config)
    assert again["port"] == payload["port"] and recorded_pid(server, config["key"]) == record["pid"]
    assert healthy(again)
    assert stop(config)["stopped"]


def test_service_of_the_original_is_reused(server: SSHServer, original: Original,
                                           make_config: Callable[..., dict[str, Any]]) -> None:
    """0.4.5's own client launches it on that server (in local mode, as the account: the guard lets no
    client program in; its rhl-launch-service, its default whitelist); ours reuses it through the guard."""
    config = make_config()
    local = {field: value for field, value in config.items() if field not in ("hostname", "ssh_hostname", "tunnel")}
    path = original.write("rhl-guard-test/original.yaml", json.dumps(local))  # removed by CLEANUP
    launched = server.run(f"cd && PATH={shlex.quote(original.venv)}/bin:$PATH "
                          f"exec remote-http-launcher {shlex.quote(path)} </dev/null")
    assert launched.returncode == 0, launched.stderr
    record = remote_state(server, config["key"])
    assert record is not None and record["status"] == "running" and "start_time" not in record
    payload = run(config)
    assert payload["port"] == record["port"] and recorded_pid(server, config["key"]) == record["pid"]
    assert status(config)["status"] == "running"


@pytest.mark.parametrize(("fields", "reason"), [
    ({"command": "{python} -m http.server --bind {{network_interface}}"},
     "rhl-launch-service: service binary is not whitelisted: '{python}'"),
    ({"workdir": "~/.hidden-work"},  # refused under either policy: a dot segment
     "refused rhl-launch-service: rhl-guard: rejected: path must not contain dot-prefixed segments: "
     "{home}/.hidden-work"),
    ({"command": "hashserver --status-file {{status_file}} && sleep 1"},
     "rhl-launch-service runs one program with arguments, not shell syntax"),
    ({"command": "hashserver --port {{port}}"},  # a stock server: the guard's helper chooses no port
     "rhl-launch-service cannot choose a port for a command reading {{port}}"),
], ids=["helper-whitelist", "guard-path-policy", "shell-syntax", "stock-port"])
def test_refusal_is_one_line(server: SSHServer, make_config: Callable[..., dict[str, Any]], tmp_path: Path,
                             fields: dict[str, str], reason: str) -> None:
    """What the guard or its helper refuses: one line quoting its reason, exit code 1 (the server's policy
    decides, not the config alone)."""
    config = make_config(**{name: value.format(python=server.python) for name, value in fields.items()})
    path = tmp_path / "refused.yaml"
    path.write_text(json.dumps(config))
    result = cli(path)
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert reason.format(python=server.python, home=server.home) in errors[0]
    assert "Traceback" not in result.stderr


def test_workdir_outside_data_roots(server: SSHServer, make_config: Callable[..., dict[str, Any]], tmp_path: Path,
                                    policy: str) -> None:
    """--data-roots refuses a workdir it does not list; the seamless preset checks only its heuristics."""
    config = make_config(workdir="~/rhl-guard-elsewhere")
    path = tmp_path / "elsewhere.yaml"
    path.write_text(json.dumps(config))
    result = cli(path)
    if policy == "seamless":
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines()[-1] == (
        "error: testhost: the server's rhl-guard (authorized_keys command=) refused rhl-launch-service: rhl-guard: "
        f"rejected: path is outside configured --data-roots: {server.home}/rhl-guard-elsewhere")


@pytest.fixture(scope="module")
def sftp_off(sshd_account: SSHAccount) -> Iterator[SSHServer]:
    """An sshd of the test account with a normal key but an SFTP subsystem that exits at once."""
    yield from _in_namespace(sshd_account, lambda ns: launch_sshd(
        sshd_account, "sftp-off", ns, config_overrides={"Subsystem": "sftp /bin/false"}))


@pytest.mark.parametrize("persist", [600, 0], ids=["broker", "own-login"])
def test_other_sftp_failures_stay_what_they_were(sftp_off: SSHServer, client_home: Path, rhl_dir: Path,
                                                 persist: int) -> None:
    """Without the guard's refusal on the exec channel, a failed SFTP start is reported as before."""
    sftp_off.write_ssh_config(client_home, ALIAS)
    config = {"workdir": f"~/{WORKDIR}", "hostname": sftp_off.host, "ssh_hostname": ALIAS, "key": "no-sftp",
              "command": "true", "connection_persist": persist}
    with pytest.raises(HostError) as raised:
        status(config)
    assert "SFTP: home directory" in str(raised.value) and "rhl-guard" not in str(raised.value)
