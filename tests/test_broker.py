"""The connection broker against the real test sshd: one login per host, failures invisible.

Logins are counted in the sshd's own log ("Accepted publickey"): each line is one authentication.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from pytest_mock import MockerFixture

from remote_http_launcher.broker.client import BrokeredHost
from remote_http_launcher.broker.registry import BrokerFiles, live_brokers
from remote_http_launcher.config import load_config
from remote_http_launcher.connect import open_host, open_ssh
from tests.conftest import alive, cli, probe_imports, stop_brokers
from tests.posix import SIGKILL
from tests.remote import RemoteConfig, keeper_processes
from tests.ssh_client import ALIAS

if TYPE_CHECKING:
    from tests.sshd import SSHServer

ACCEPTED = "Accepted publickey"
EXIT_WAIT = 30.0


def write(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def logins(server: SSHServer) -> int:
    return server.log_text().count(ACCEPTED)


def listening_at(files: BrokerFiles) -> str:
    """Where a broker of `files` listens on this machine: its socket file, or where a state directory too deep
    for a socket's path (a long tmp_path) moves it."""
    return files.address("")


def brokers(rhl_dir: Path) -> list[int]:
    return [owner.pid for _files, owner in live_brokers(rhl_dir / "brokers")]


def ok(*args: str | Path) -> str:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + EXIT_WAIT
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def test_commands_share_one_login(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                  tmp_path: Path) -> None:
    first = write(tmp_path, "a", remote_config(keyed_server))
    second = write(tmp_path, "b", {**remote_config(keyed_server), "key": remote_config(keyed_server)["key"] + "-b"})
    before = logins(keyed_server)
    for config in (first, second):
        ok(config)
        ok("status", config)
        ok("logs", config)
    listed = json.loads(ok("list", "--host", ALIAS, "--json"))
    assert len(listed["services"]) == 2
    ok("stop", first)
    ok(first)
    assert logins(keyed_server) - before == 1
    (broker,) = brokers(rhl_dir)
    (entry,) = json.loads(ok("connections", "--json"))["connections"]
    assert entry["host"] == ALIAS and entry["pid"] == broker and entry["sessions"] == 0
    assert ALIAS in ok("connections")
    assert f"pid {broker}" in ok("disconnect", ALIAS)
    wait_gone(broker)
    assert not any((rhl_dir / "brokers").glob("*.sock")) and not any((rhl_dir / "brokers").glob("*.lock"))


def test_list_reads_each_status_file_with_its_pids_start_time_in_one_step(
        keyed_server: SSHServer, remote_config: RemoteConfig, tmp_path: Path, mocker: MockerFixture) -> None:
    """`list --host` through a broker: one request a key (the file and its PID's start time, one round trip
    in a kept shell), not a second one for the process check: 100 services were 13 s on a loaded machine."""
    from remote_http_launcher.commands.listing import list_services

    one = remote_config(keyed_server)
    keys = [f"{one['key']}-{n}" for n in range(3)]
    for key in keys:
        ok(write(tmp_path, key, {**one, "key": key}))
    host = open_ssh(ALIAS, 60)
    try:
        assert isinstance(host, BrokeredHost)
        separate = mocker.spy(host, "process_start_time")
        entries = list_services(host)
    finally:
        host.close()
    assert sorted(entry["key"] for entry in entries) == keys and {e["status"] for e in entries} == {"running"}
    assert separate.call_count == 0


def test_connections_asking_is_no_use_of_the_broker(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                    rhl_dir: Path, tmp_path: Path) -> None:
    """LAST USE is the last command's: listing the brokers (which asks each) does not make them look busy."""
    config = write(tmp_path, "a", remote_config(keyed_server))
    assert cli("status", config).returncode == 3  # absent
    used = time.time()
    time.sleep(2.5)
    for _ in range(2):
        (entry,) = json.loads(ok("connections", "--json"))["connections"]
        assert entry["last_use"] is not None and entry["last_use"] <= used + 0.5, time.time() - entry["last_use"]
    last_use = re.search(r"\s(\d+)s ago\s+0\s", ok("connections").splitlines()[1])  # LAST USE, then IN USE
    assert last_use is not None and int(last_use.group(1)) >= 2
    assert cli("status", config).returncode == 3  # absent
    (entry,) = json.loads(ok("connections", "--json"))["connections"]
    assert entry["last_use"] > used + 2  # a real command counts


def test_a_deep_state_directory_still_gets_a_broker(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state directory whose socket path would pass the 107 bytes a Unix socket may have (a deep home,
    as pytest's own tmp paths are) still gets its broker: the socket moves to a private directory."""
    state = tmp_path / ("deep-" * 20) / "rhl-state"
    monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(state))
    config = write(tmp_path, "a", remote_config(keyed_server))
    before = logins(keyed_server)
    try:
        ok(config)
        ok("status", config)
        assert logins(keyed_server) - before == 1
        ((files, owner),) = live_brokers(state / "brokers")
        address = Path(owner.data["address"])
        assert len(os.fsencode(address)) <= 107 and address.parent.stat().st_mode & 0o777 == 0o700
        assert "Traceback" not in Path(files.log).read_text()
        ok("stop", config)
        assert f"pid {owner.pid}" in ok("disconnect", ALIAS)
        wait_gone(owner.pid)
        assert not address.exists()
    finally:
        stop_brokers(state / "brokers")


def test_persist_zero_logs_in_per_command(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                          tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server, connection_persist=0))
    before = logins(keyed_server)
    ok(config)
    ok("status", config)
    ok("list", "--host", ALIAS, "--connection-persist", "0")
    assert logins(keyed_server) - before == 3
    tunneled = remote_config(keyed_server, tunnel=True, connection_persist=0)
    payload = json.loads(ok(write(tmp_path, "t", {**tunneled, "key": tunneled["key"] + "-t"}), "--json"))
    assert keeper_processes(tunneled["key"] + "-t") == [payload["keeper_pid"]]  # a keeper process, as before
    assert logins(keyed_server) - before == 4
    assert brokers(rhl_dir) == [] and not (rhl_dir / "brokers").exists()


def test_flag_overrides_config(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                               tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server, connection_persist=0))
    ok(config, "--connection-persist", "30")
    assert len(brokers(rhl_dir)) == 1
    bad = cli("status", config, "--connection-persist", "-1")
    assert bad.returncode == 2 and "--connection-persist: expected seconds from 0 to 604800" in bad.stderr


def test_idle_broker_exits_and_leaves_no_files(keyed_server: SSHServer, remote_config: RemoteConfig,
                                               rhl_dir: Path, tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server, connection_persist=1))
    assert cli("status", config).returncode == 3  # absent
    (broker,) = brokers(rhl_dir)
    wait_gone(broker)
    left = sorted(path.name for path in (rhl_dir / "brokers").iterdir())
    assert [name for name in left if not name.endswith(".log")] == []


def test_killed_broker_between_commands(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                        tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config)
    (first,) = brokers(rhl_dir)
    os.kill(first, SIGKILL)
    wait_gone(first)
    assert "running" in ok("status", config)  # its socket, key and lock are left: a stale broker
    (second,) = brokers(rhl_dir)
    assert second != first


def test_killed_broker_during_command(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                      client_home: Path) -> None:
    config = load_config(remote_config(keyed_server))
    with open_host(config) as host:
        assert isinstance(host, BrokeredHost)
        home = host.home
        (first,) = brokers(rhl_dir)
        os.kill(first, SIGKILL)
        wait_gone(first)
        assert host.read(f"{home}/.profile-that-is-absent") is None  # repeated on a new connection
        assert host.run_script("printf %s hi", []).stdout == "hi"
    (second,) = brokers(rhl_dir)
    assert second != first


def test_simultaneous_commands_start_one_broker(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                rhl_dir: Path, tmp_path: Path) -> None:
    before = logins(keyed_server)
    runs = [subprocess.Popen([sys.executable, "-m", "remote_http_launcher", "list", "--host", ALIAS],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            for _ in range(20)]
    for run in runs:
        assert run.wait(120) == 0, run.stderr.read() if run.stderr else ""
    assert len(brokers(rhl_dir)) == 1
    assert logins(keyed_server) - before == 1


def test_other_user_cannot_connect(keyed_server: SSHServer, client_home: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the broker's own directory (0700) and key (0600) keep others out: the state directory
    above it is world-traversable here."""
    state = Path(tempfile.mkdtemp(prefix="rhl-broker-"))
    state.chmod(0o755)
    monkeypatch.setenv("REMOTE_HTTP_LAUNCHER_DIR", str(state))
    host = open_ssh(ALIAS, 60)
    try:
        files = BrokerFiles.for_target(ALIAS)
        assert Path(files.socket).exists() and Path(files.key).stat().st_mode & 0o777 == 0o600
        probe = f"from multiprocessing.connection import Client; Client({str(files.socket)!r}, authkey=b'guess')"
        attempt = keyed_server.run(f"{keyed_server.python} -c {shlex.quote(probe)}")
        assert "PermissionError" in attempt.stderr, attempt.stderr
        key = keyed_server.run(f"cat {shlex.quote(str(files.key))}")
        assert key.returncode != 0 and "Permission denied" in key.stderr
    finally:
        host.close()
        stop_brokers(state / "brokers")
        shutil.rmtree(state, ignore_errors=True)


def get(payload: dict[str, Any]) -> int | None:
    from remote_http_launcher import handshake

    return handshake.get_status("127.0.0.1", payload["port"], "/healthcheck")


def test_tunnels_live_in_the_broker(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                    tmp_path: Path) -> None:
    one = remote_config(keyed_server, tunnel=True)
    first = write(tmp_path, "a", one)
    second = write(tmp_path, "b", {**one, "key": one["key"] + "-b"})
    before = logins(keyed_server)
    payloads = [json.loads(ok(config, "--json")) for config in (first, second)]
    (broker,) = brokers(rhl_dir)
    assert [p["keeper_pid"] for p in payloads] == [broker, broker]
    assert [get(p) for p in payloads] == [200, 200]
    (entry,) = json.loads(ok("connections", "--json"))["connections"]
    assert sorted(entry["tunnels"]) == sorted([one["key"], one["key"] + "-b"])
    assert json.loads(ok("status", first, "--json"))["client"]["tunnel_up"] is True
    ok("logs", second)
    ok("list", "--host", ALIAS)
    assert json.loads(ok(first, "--json")) == payloads[0]  # the warm path: nothing asked of the broker
    (rhl_dir / "client" / f"{one['key']}.json").unlink()
    assert json.loads(ok(first, "--json"))["port"] == payloads[0]["port"]  # reconnect: the kept forward
    assert ok("stop", first).endswith(f"; tunnel closed (the connection broker {broker} stays for other commands)\n")
    assert get(payloads[0]) is None and get(payloads[1]) == 200  # its forward closed, the other's not
    assert not (rhl_dir / "client" / f"{one['key']}.keeper.lock").exists()
    again = json.loads(ok(first, "--json"))
    assert again["keeper_pid"] == broker and get(again) == 200
    assert logins(keyed_server) - before == 1
    assert brokers(rhl_dir) == [broker]


def test_tunnel_ends_with_its_service(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                      tmp_path: Path) -> None:
    config = remote_config(keyed_server, tunnel=True, watchdog_interval=0.5, connection_persist=2)
    payload = json.loads(ok(write(tmp_path, "a", config), "--json"))
    (broker,) = brokers(rhl_dir)
    state = json.loads(keyed_server.run(f"cat .remote-http-launcher/server/{config['key']}.json").stdout)
    keyed_server.run(f"kill {state['pid']}")
    client = rhl_dir / "client" / f"{config['key']}.json"
    deadline = time.monotonic() + EXIT_WAIT
    while client.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client.exists() and get(payload) is None
    wait_gone(broker)  # no tunnel left, unused for connection_persist: it exits, and leaves no files
    assert [p.name for p in (rhl_dir / "brokers").iterdir() if not p.name.endswith(".log")] == []


def test_a_tunnel_that_does_not_answer_is_replaced_within_the_broker(
        keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path, tmp_path: Path) -> None:
    """A run that finds the broker's tunnel refusing (its service is gone; the watchdog has not looked yet)
    replaces that tunnel alone: the broker and its other tunnels go on, and the new forward takes the same
    local port (clients holding it keep working)."""
    one = remote_config(keyed_server, tunnel=True, watchdog_interval=60)
    first = write(tmp_path, "a", one)
    other = json.loads(ok(write(tmp_path, "b", {**one, "key": one["key"] + "-b"}), "--json"))
    payload = json.loads(ok(first, "--json"))
    (broker,) = brokers(rhl_dir)
    state = json.loads(keyed_server.run(f"cat .remote-http-launcher/server/{one['key']}.json").stdout)
    keyed_server.run(f"kill {state['pid']}")
    again = json.loads(ok(first, "--json"))
    assert (again["keeper_pid"], again["port"]) == (broker, payload["port"])
    assert get(again) == 200 and get(other) == 200
    assert brokers(rhl_dir) == [broker]


def test_a_broken_link_is_invisible(keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path,
                                    tmp_path: Path) -> None:
    """The server drops the broker's connection (as a restarted sshd would): the next commands still work,
    logged in again (directly, or by a fresh broker once the old one noticed and exited)."""
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config)
    (first,) = brokers(rhl_dir)
    keyed_server.stop()
    keyed_server.start()
    assert "running" in ok("status", config)
    ok("logs", config)
    wait_gone(first)  # it found its link gone, and had no tunnel to keep
    assert "running" in ok("status", config)
    assert brokers(rhl_dir) not in ([], [first])


def test_a_client_stalled_in_the_authkey_proof_delays_no_other(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                               rhl_dir: Path, tmp_path: Path) -> None:
    import socket

    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config)
    ((files, owner),) = live_brokers(rhl_dir / "brokers")
    with socket.socket(socket.AF_UNIX) as stalled:
        stalled.connect(listening_at(files))  # and never answers the broker's challenge
        result = cli("status", config, timeout=20)
        assert result.returncode == 0, result.stderr
    assert brokers(rhl_dir) == [owner.pid]


def test_another_version_gets_its_own_broker(client_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker answers the requests of the version that started it: after an upgrade, a new one."""
    from remote_http_launcher._version import __version__
    from remote_http_launcher.broker import registry

    current = registry.destination_id(ALIAS)
    assert registry.destination_id(ALIAS) == current
    monkeypatch.setattr("remote_http_launcher.broker.registry.__version__", __version__ + ".post1")
    assert registry.destination_id(ALIAS) != current


def test_broker_that_cannot_start_says_one_line_and_the_command_logs_in(keyed_server: SSHServer,
                                                                         remote_config: RemoteConfig,
                                                                         rhl_dir: Path, tmp_path: Path) -> None:
    """A broker that cannot open its log (here a directory is in its place) fails before it has one: one
    `warning:` line on the user's terminal, never a traceback, and the command goes on with its own login."""
    log = Path(BrokerFiles.for_target(ALIAS).log)
    log.mkdir(parents=True)
    (log.with_name(log.name + ".1") / "in-the-way").mkdir(parents=True)  # the previous log's place, too
    result = cli(write(tmp_path, "a", remote_config(keyed_server)))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "broker" in line]
    assert warning.startswith("warning: connection broker: ") and warning.endswith("; logging in directly")


def test_broker_refusing_its_directory_reports_one_line(tmp_path: Path) -> None:
    """The broker program itself, its directory another user could write: one line on stderr, the client's
    answer (BrokerUnavailable: it then logs in itself) on stdout, no traceback."""
    state = tmp_path / "state"
    (state / "brokers").mkdir(parents=True, mode=0o700)
    (state / "brokers").chmod(0o777)
    result = subprocess.run([sys.executable, "-m", "remote_http_launcher.broker", "--target", "nohost",
                             "--persist", "5"], env={**os.environ, "REMOTE_HTTP_LAUNCHER_DIR": str(state)},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "BrokerUnavailable"
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"warning: connection broker: state directory {state / 'brokers'} may be written")


def test_stop_after_the_broker_was_killed_leaves_no_files(keyed_server: SSHServer, remote_config: RemoteConfig,
                                                          rhl_dir: Path, tmp_path: Path) -> None:
    settings = remote_config(keyed_server, tunnel=True)
    config = write(tmp_path, "a", settings)
    ok(config)
    client = rhl_dir / "client"
    assert (client / f"{settings['key']}.keeper.lock").exists()  # the broker holds the tunnel
    (broker,) = brokers(rhl_dir)
    os.kill(broker, SIGKILL)
    wait_gone(broker)
    ok("stop", config)
    assert sorted(path.name for path in client.iterdir() if path.name.startswith(settings["key"])) == []


def test_new_broker_keeps_the_dead_brokers_log(keyed_server: SSHServer, remote_config: RemoteConfig,
                                               rhl_dir: Path, tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config)
    (first,) = brokers(rhl_dir)
    os.kill(first, SIGKILL)
    wait_gone(first)
    ok("status", config)
    (second,) = brokers(rhl_dir)
    log = Path(BrokerFiles.for_target(ALIAS).log)
    previous = log.with_name(log.name + ".1")
    assert f"broker {first} for" in previous.read_text()
    assert f"broker {second} for" in log.read_text() and f"broker {first} for" not in log.read_text()
    assert previous.stat().st_mode & 0o777 == 0o600


def test_connections_say_which_broker_is_current_after_ssh_config_changed(
        keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path, client_home: Path,
        tmp_path: Path) -> None:
    config = write(tmp_path, "a", remote_config(keyed_server))
    ok(config)
    (old,) = brokers(rhl_dir)
    ssh_config = client_home / ".ssh" / "config"
    ssh_config.write_text(ssh_config.read_text() + "\n# edited\n")
    ok("status", config)
    (new,) = set(brokers(rhl_dir)) - {old}
    entries = json.loads(ok("connections", "--json"))["connections"]
    assert {entry["pid"]: entry["current"] for entry in entries} == {old: False, new: True}
    rows = {line.split()[1]: line for line in ok("connections").splitlines()[1:]}
    assert rows[str(new)].endswith("current") and rows[str(old)].endswith("old (idles out)")


def test_a_claim_while_the_links_restore_is_pending_keeps_the_broker_tunnel(
        keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker's link dies and its watch has not started the restore yet (here: a session's SFTP call
    holds the link's lock): a run's claim meets the tunnel failing at once, and the broker, which knows its
    link is down, keeps its tunnel for the restore instead of dropping it; the run then reuses it, same port.

    The broker's tunnels run in this process (to hold the link's lock at the right moment): its command
    line stands for the broker's in the keeper lock's identity check."""
    from types import SimpleNamespace

    from remote_http_launcher.broker.tunnels import Tunnels
    from remote_http_launcher.hosts.ssh import SSHHost
    from remote_http_launcher.launcher import Launcher
    from remote_http_launcher.progress import Progress
    from remote_http_launcher.tunnels import lock as keeper_lock
    from remote_http_launcher.tunnels.daemon import config_json
    from remote_http_launcher.tunnels.watch import Link

    monkeypatch.setattr(keeper_lock, "is_keeper", lambda owner, key: owner.same_process())
    raw = remote_config(keyed_server, tunnel=True, watchdog_interval=60)
    config = load_config(raw)
    key = raw["key"]
    client_path = rhl_dir / "client" / f"{key}.json"
    client_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    link = Link(ALIAS, SSHHost.connect(ALIAS, interactive=False))
    broker = SimpleNamespace(link=link, log_path=tmp_path / "broker.log", broker_id=str(tmp_path / "broker.lock"),
                             record_tunnels=lambda locks: None)
    tunnels = Tunnels(broker)
    wire = json.loads(config_json(config))
    try:
        assert tunnels.claim(wire, key, str(client_path)) is None
        payload, state = Launcher(config, key, client_path, Progress.silent()).serve(
            link.host, lambda service, state: tunnels.open(key, state.data))
        tunnels.keep(key, state.data, payload)
        assert get(dict(payload)) == 200
        kept = tunnels.by_key[key]
        with ThreadPool(1) as pool:
            with link.lock:  # the watch cannot check (and so restore) while we hold it
                link.host.transport.close()  # the link's alive check found the server silent
                claimed = pool.apply_async(tunnels.claim, (wire, key, str(client_path)))
                time.sleep(3)  # the claim tries the tunnel (refused at once) and decides
                assert tunnels.by_key.get(key) is kept, "the broker dropped the tunnel it is about to restore"
            assert claimed.get(timeout=60) == payload  # reused once the watch restored the link
        assert tunnels.by_key.get(key) is kept and get(dict(payload)) == 200
    finally:
        tunnels.drop_all("the test ends")
        link.close()


def test_the_next_broker_restores_every_tunnel_of_a_killed_one_on_its_ports(
        keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path, tmp_path: Path) -> None:
    """A broker killed while it keeps two tunnels: the next command for the host (a `status` of one key)
    starts a broker that keeps both again, on their local ports: no keeper process, no new port."""
    one = remote_config(keyed_server, tunnel=True)
    configs = [write(tmp_path, "a", one), write(tmp_path, "b", {**one, "key": one["key"] + "-b"})]
    payloads = [json.loads(ok(config, "--json")) for config in configs]
    (first,) = brokers(rhl_dir)
    os.kill(first, SIGKILL)
    wait_gone(first)
    assert [get(payload) for payload in payloads] == [None, None]
    assert "running" in cli("status", configs[0]).stdout  # exit 4 (the tunnel is down), as it was, yet
    (second,) = brokers(rhl_dir)
    assert second != first
    client = rhl_dir / "client"

    def restored() -> bool:
        files = [client / f"{key}.json" for key in (one["key"], one["key"] + "-b")]
        return all(path.exists() and json.loads(path.read_text())["keeper_pid"] == second for path in files)

    deadline = time.monotonic() + EXIT_WAIT
    while not restored() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert restored(), [path.read_text() for path in (rhl_dir / "brokers").glob("*.log")]
    assert [get(payload) for payload in payloads] == [200, 200]  # the same local ports
    assert keeper_processes(str(client)) == []
    assert sorted(json.loads(ok("connections", "--json"))["connections"][0]["tunnels"]) == \
        sorted([one["key"], one["key"] + "-b"])


def test_a_run_whose_broker_dies_runs_again_in_a_new_broker(
        keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path, tmp_path: Path) -> None:
    """The broker dies while a run opens its tunnel: the run goes on in a new broker (it keeps the tunnel),
    not in a keeper process of its own with a login of its own."""
    from remote_http_launcher.broker.tunnels import run_tunnel
    from remote_http_launcher.progress import Progress
    from remote_http_launcher.statefiles import client_file

    killed: list[int] = []

    class KillsTheBroker(Progress):  # the moment: the broker was asked to open the forwards
        def phase(self, text: str) -> None:
            super().phase(text)
            if text == "opening the tunnel" and not killed:
                (broker,) = brokers(rhl_dir)
                os.kill(broker, SIGKILL)
                wait_gone(broker)
                killed.append(broker)

    raw = remote_config(keyed_server, tunnel=True)
    config = load_config(raw)
    path = Path(client_file(raw["key"], None, local_service=False))
    ran = run_tunnel(config, raw["key"], path, KillsTheBroker(stream=open(os.devnull, "w")), None)  # noqa: SIM115
    assert killed and ran is not None, "the run fell back to a keeper process"
    payload, reused = ran
    (second,) = brokers(rhl_dir)
    assert second not in killed and payload["keeper_pid"] == second and not reused
    assert get(dict(payload)) == 200


#: Modules a reconnect through a live broker does without (a tenth of its time or more together, on loopback).
RECONNECT_FORBIDDEN = ("paramiko", "multiprocessing", "logging", "subprocess", "hashlib", "hmac", "tempfile",
                       "typing", "yaml", "pathlib", "urllib", "base64", "encodings.idna", "json", "re",
                       "socket", "enum", "math", "select", "_struct", "warnings", "contextlib",
                       "collections", "functools", "types")


def test_a_reconnect_through_a_live_broker_imports_no_login_and_no_heavy_module(
        keyed_server: SSHServer, remote_config: RemoteConfig, rhl_dir: Path, tmp_path: Path) -> None:
    fields = remote_config(keyed_server)
    config, client_file = write(tmp_path, "svc", fields), rhl_dir / "client" / f"{fields['key']}.json"
    ok(config)
    client_file.unlink()
    before = logins(keyed_server)
    result, stderr = probe_imports(config)
    assert result["code"] == 0 and "launching" not in stderr and "ready" in stderr, stderr
    assert client_file.exists() and logins(keyed_server) == before
    assert [m for m in RECONNECT_FORBIDDEN if m in result["modules"]] == []


def test_the_broker_remembers_each_status_file_it_read_for_any_client(
        keyed_server: SSHServer, remote_config: RemoteConfig, tmp_path: Path) -> None:
    """What a command's read of a status file returned, the broker gives the next command without a round
    trip (Host.recall_status_file), so that its handshake need not wait for its own read; a login of our
    own remembers nothing."""
    fields = remote_config(keyed_server)
    ok(write(tmp_path, "svc", fields))
    name = f"{fields['key']}.json"
    host = open_ssh(ALIAS, 60)
    try:
        assert isinstance(host, BrokeredHost)
        recalled = host.recall_status_file(name)
        assert recalled is not None and json.loads(recalled)["status"] == "running"
        assert recalled == host.read_status_file(name)[0]
        assert host.recall_status_file("never-read.json") is None
    finally:
        host.close()
    direct = open_ssh(ALIAS, 0)
    try:
        assert direct.read_status_file(name)[0] == recalled and direct.recall_status_file(name) is None
    finally:
        direct.close()
