"""Silent links: a link that stops carrying packets without closing (tests/linkproxy.py freezes it).

The client reaches the test sshd through a LinkProxy, directly, through a jump
host (the proxy in front of the jump host) or through a ProxyCommand (which
connects to the proxy). Keep-alives are short (ServerAliveInterval 1 x
ServerAliveCountMax 2), so a silent server must be given up on in seconds; the
subprocess timeouts below are generous upper bounds, well under the 120 s and
30 s waits these tests were written against, not timing asserts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remote_http_launcher import handshake
from remote_http_launcher.errors import AuthenticationError, HostError
from remote_http_launcher.hosts.ssh import SSHHost
from remote_http_launcher.ssh import dialahead
from tests.conftest import ROOT, alive, wait_for
from tests.linkproxy import LinkProxy, answering_within, get, refused_at_once, through
from tests.posix import python_path
from tests.remote import keeper_processes
from tests.ssh_client import ALIAS, RELAY, demo_config, node_key, remote_state, stop_services_script

if TYPE_CHECKING:
    from tests.sshd import SSHServer

ALIVE = {"ServerAliveInterval": "1", "ServerAliveCountMax": "2"}  # a silent server is gone after 2 s
LAUNCH_STARTED = "rhl-links-launch-started"  # written by the server's ~/.profile while the launch script runs
CLEANUP = stop_services_script(f'kill "$(cat {LAUNCH_STARTED} 2>/dev/null)" 2>/dev/null; '
                               f'rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work" .profile {LAUNCH_STARTED}')
VIAS = ["direct", "ProxyJump", "ProxyCommand"]


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture
def link(sshd: SSHServer) -> Iterator[LinkProxy]:
    """A freezable link to the test sshd; thawed and closed after the test."""
    sshd.start()
    with LinkProxy((sshd.host, sshd.port)) as proxy:
        yield proxy
        proxy.thaw()
    sshd.run(CLEANUP)


@pytest.fixture
def jump_link(jump_sshd: SSHServer) -> Iterator[LinkProxy]:
    """A freezable link to the jump host."""
    with LinkProxy((jump_sshd.host, jump_sshd.port)) as proxy:
        yield proxy
        proxy.thaw()


def connect_via(via: str, request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path,
                tmp_path: Path, **extra: str) -> LinkProxy:
    """Write ALIAS into ~/.ssh/config, reaching sshd `via` a frozen-able link; that link."""
    if via == "ProxyJump":
        jump_sshd: SSHServer = request.getfixturevalue("jump_sshd")
        proxy: LinkProxy = request.getfixturevalue("jump_link")
        jump_sshd.write_ssh_config(client_home, "jump", {**through(proxy, jump_sshd), **ALIVE})
        sshd.write_ssh_config(client_home, ALIAS, {"ProxyJump": "jump", **ALIVE, **extra})
        return proxy
    proxy = request.getfixturevalue("link")
    if via == "ProxyCommand":
        relay = tmp_path / "relay.py"
        relay.write_text(RELAY)
        options = {"ProxyCommand": f"{sys.executable} {relay} 127.0.0.1 {proxy.port}"}
    else:
        options = through(proxy, sshd)
    sshd.write_ssh_config(client_home, ALIAS, {**options, **ALIVE, **extra})
    return proxy


@pytest.fixture
def make_config(sshd: SSHServer, remote_demo: str, connection_dir: Path,
                request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    # connection_persist 0: the run connects itself, and a tunnel has its own keeper process (what these tests
    # are about; a broker uses the same connection code, and the keeper's claim for its tunnels)
    return partial(demo_config, sshd, remote_demo, node_key("lnk-", request.node.name), connection_persist=0)


def cli_args(config: dict[str, Any], tmp_path: Path) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return [sys.executable, "-m", "remote_http_launcher", str(path), "--json"]


def cli(config: dict[str, Any], tmp_path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_args(config, tmp_path), env=cli_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": python_path(ROOT)}


def start_tunnel(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Run the CLI for a `tunnel: true` config; the payload its keeper serves."""
    result = cli(config, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's one error line (the last on stderr), with no traceback and no 'internal error'."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return lines[-1]


# ---------------------------------------------------------------- item 4: every failure is our one line

@pytest.mark.parametrize("via", VIAS)
def test_a_cold_launch_into_a_frozen_link_is_one_line(via: str, request: pytest.FixtureRequest, sshd: SSHServer,
                                                      client_home: Path, make_config: Callable[..., dict[str, Any]],
                                                      tmp_path: Path) -> None:
    """The server greets, then the link goes silent: paramiko's start_client returns quietly when its time
    is up, and the next call raises a bare SSHException; neither may become 'internal error'."""
    proxy = connect_via(via, request, sshd, client_home, tmp_path)
    proxy.freeze_after_greeting()
    line = error_line(cli(make_config(), tmp_path, timeout=90))
    jump = r"via jump host jump: ssh jump \(.*?\): " if via == "ProxyJump" else ""
    assert re.fullmatch(rf"error: ssh {ALIAS} \(.*?\): {jump}key exchange: the server stopped answering "
                        r"\(no key exchange within 15 s\)", line), line


def test_the_keeper_outlives_a_link_frozen_through_a_reconnect(
        request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """A reconnect attempt that runs into the frozen link fails with our one line, and the keeper tries again."""
    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    config = make_config(network_interface="127.0.0.1", tunnel=True, watchdog_interval=3)  # 36 s to reconnect
    payload = start_tunnel(config, tmp_path)
    log = Path(payload["keeper_log"])
    proxy.freeze()
    proxy.freeze_after_greeting()  # the keeper's reconnects are greeted, then meet silence
    try:
        wait_for(lambda: "reconnect failed" in log.read_text() or not alive(payload["keeper_pid"]), 60,
                 "a reconnect attempt to fail")
    finally:
        proxy.thaw()
    wait_for(lambda: "reconnected" in log.read_text() or not alive(payload["keeper_pid"]), 60, "the reconnect")
    text = log.read_text()
    assert "internal error" not in text and "Traceback" not in text, text
    assert re.search(rf"reconnect failed: ssh {ALIAS} \(.*?\): key exchange: the server stopped answering", text), text
    assert alive(payload["keeper_pid"]) and "reconnected" in text, text
    assert get(payload["port"]) == b"ok\n"


# ---------------------------------------------------------------- item 5: waits honour the keep-alive bound

def test_a_link_frozen_during_the_launch_script_names_that_step(
        request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """The launch script's exec ends within the keep-alive bound (not after 120 s), and releasing the
    launch lock on the dead connection does not replace that error."""
    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    # With `conda`, the launch script asks the login shell where conda is: ~/.profile holds it there.
    sshd.run(f"printf '%s\\n' 'echo $$ > \"$HOME/{LAUNCH_STARTED}\"; sleep 60' > .profile", check=True)
    run = subprocess.Popen(cli_args(make_config(conda="base"), tmp_path), env=cli_env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sshd.run(f"test -s {LAUNCH_STARTED}").returncode == 0, 30, "the launch script")
        proxy.freeze()
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    line = error_line(subprocess.CompletedProcess(run.args, run.returncode, out, err))
    assert re.fullmatch(rf"error: ssh {ALIAS} \(.*?\): exec: connection lost \(no answer within 2 s\)", line), line


# ---------------------------------------------------------------- item 6: a keeper that reconnects is waited for

# Who keeps the tunnel: a keeper process (connection_persist 0) or the broker (the default), which keeps it
# as a thread and takes the second run's claim itself.
KEEPERS = ["process", "broker"]


def glitch_config(make_config: Callable[..., dict[str, Any]], keeper: str, **fields: Any) -> dict[str, Any]:
    config = make_config(network_interface="127.0.0.1", tunnel=True, **fields)
    if keeper == "broker":
        del config["connection_persist"]
    return config


@pytest.mark.parametrize("keeper", KEEPERS)
def test_a_run_during_a_glitch_waits_for_the_reconnecting_keeper(
        keeper: str, request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    config = glitch_config(make_config, keeper, watchdog_interval=3)
    payload = start_tunnel(config, tmp_path)
    log = Path(payload["keeper_log"])
    second_run_in_a_glitch(keeper, proxy, config, tmp_path, connection_dir, payload,
                           noticed=lambda: re.search(r"link to \S+ lost", log.read_text()) is not None, deciding=1)


@pytest.mark.parametrize("keeper", KEEPERS)
def test_a_run_during_a_glitch_the_keeper_has_not_noticed_leaves_it_alone(
        keeper: str, request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """With keep-alives slower than the run's handshake, the run meets a silent tunnel whose keeper has not
    noticed anything yet: it waits for the keeper to notice (or the link to come back), not kill it."""
    proxy = connect_via("direct", request, sshd, client_home, tmp_path, ServerAliveInterval="10")  # notices in 30 s
    config = glitch_config(make_config, keeper, watchdog_interval=60)
    payload = start_tunnel(config, tmp_path)
    second_run_in_a_glitch(keeper, proxy, config, tmp_path, connection_dir, payload, noticed=lambda: True,
                           deciding=handshake.HANDSHAKE_TIMEOUT + 1)  # its handshake met the silent tunnel


def second_run_in_a_glitch(keeper: str, proxy: LinkProxy, config: dict[str, Any], tmp_path: Path,
                           connection_dir: Path, payload: dict[str, Any], noticed: Callable[[], bool],
                           deciding: float) -> None:
    """Freeze the link; once `noticed()`, start a second run and thaw once its claim decided about the first
    keeper. The second run must reuse the first keeper: the same payload, the same local port, the same
    keeper (a process, or the broker's tunnel, which was not closed)."""
    keeper_pid = payload["keeper_pid"]
    log = Path(payload["keeper_log"])
    brokered = keeper == "broker"
    proxy.freeze()
    try:
        wait_for(noticed, 30, "the keeper to notice the silent link")
        second = subprocess.Popen(cli_args(config, tmp_path), env=cli_env(), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if brokered:  # the broker takes the claim: its log shows the claim's decision (wait, or stop the keeper)
            decided = re.compile(rf"tunnel keeper {keeper_pid}\b")
            wait_for(lambda: decided.search(log.read_text()) is not None, 60, "the second run's claim")
            time.sleep(1)
        else:
            wait_for(lambda: len(keeper_processes(str(connection_dir))) == 2, 30, "the second run's keeper")
            time.sleep(deciding)
    finally:
        proxy.thaw()
    out, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    assert json.loads(out) == payload, err
    assert keeper_processes(str(connection_dir)) == ([] if brokered else [keeper_pid])
    assert alive(keeper_pid)
    assert "closing the tunnel" not in log.read_text(), log.read_text()
    assert get(payload["port"]) == b"ok\n"


def test_a_keeper_restoring_its_link_is_waited_for_whatever_the_claims_clock_says(
        request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim meeting a keeper process that says it restores its link waits for as long as that same process
    (PID and start time) holds the lock, not until the time its record names: the claim's clock may be past
    it already (here an hour ahead, as a laptop's wall clock after a suspend), and the keeper ends by itself
    when it gives up."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from remote_http_launcher.config import load_config
    from remote_http_launcher.progress import Progress
    from remote_http_launcher.statefiles import client_file
    from remote_http_launcher.tunnels import claim as claiming
    from remote_http_launcher.tunnels.lock import KeeperLock, reconnecting_until

    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    config = glitch_config(make_config, "process", watchdog_interval=3)
    payload = start_tunnel(config, tmp_path)
    keeper, port = payload["keeper_pid"], payload["port"]
    lock = KeeperLock(Path(client_file(config["key"], None, local_service=False)), config["key"])

    def says_it_restores() -> bool:
        owner = lock.read()[1]
        return owner is not None and reconnecting_until(owner) is not None

    monkeypatch.setattr(claiming, "time", SimpleNamespace(time=lambda: time.time() + 3600,
                                                          monotonic=time.monotonic, sleep=time.sleep))
    proxy.freeze()
    try:
        wait_for(says_it_restores, 30, "the keeper to say it restores its link")
        with ThreadPoolExecutor(1) as pool:
            claimed = pool.submit(claiming.claim, lock, load_config(config), Progress.silent())
            time.sleep(handshake.HANDSHAKE_TIMEOUT + 2)  # the claim has tried the tunnel (it fails) and decided
            assert alive(keeper) and not claimed.done()
            proxy.thaw()
            result = claimed.result(90)
    finally:
        proxy.thaw()
    assert result.reused == payload
    assert keeper_processes(str(connection_dir)) == [keeper]
    assert get(port) == b"ok\n"


# ---------------------------------------------------------------- item 7: a freeze during login is not a refusal

def test_a_freeze_during_login_says_the_server_stopped_answering(
        request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, tmp_path: Path) -> None:
    proxy = connect_via("direct", request, sshd, client_home, tmp_path, IdentityFile="none")

    def answer(question: str, secret: bool) -> str:
        proxy.freeze()  # the answer goes out into a link that no longer carries anything
        return sshd.password

    with pytest.raises(HostError) as raised:
        SSHHost.connect(ALIAS, prompt=answer)
    message = str(raised.value)
    assert not isinstance(raised.value, AuthenticationError), message  # retrying later may work: not a refusal
    assert re.fullmatch(rf"ssh {ALIAS} \(.*?\): auth: (password|keyboard-interactive): the server stopped "
                        r"answering \(no reply within 2 s\)", message), message


# ---------------------------------------------------------------- sessions that survive: long loss, suspend

#: How long tunnels used to try restoring a lost link: 12 watchdog intervals (watchdog_interval 1 below).
OLD_LIMIT = 12
def still_served(sshd: SSHServer, config: dict[str, Any], payload: dict[str, Any], connection_dir: Path,
                 service: dict[str, Any]) -> None:
    """The same service (not relaunched) answers on the same local port, through the same keeper, whose
    client file is unchanged."""
    assert answering_within(payload["port"], 30) < 30
    assert remote_state(sshd, config["key"]) == service
    assert alive(payload["keeper_pid"])
    assert json.loads((connection_dir / f"{config['key']}.json").read_text()) == payload


@pytest.mark.parametrize("keeper", KEEPERS)
def test_a_tunnel_outlives_a_long_silent_link_on_its_local_port(
        keeper: str, request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """Silent for longer than tunnels used to try, then back: the same local port answers again, with no
    command run and nothing relaunched; meanwhile it was bound and refused connections at once. A tunnel
    whose service ended meanwhile is closed once the link is back."""
    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    config = glitch_config(make_config, keeper, watchdog_interval=1)
    ends = glitch_config(make_config, keeper, watchdog_interval=1, key=config["key"] + "-ends")
    payload = start_tunnel(config, tmp_path)
    ended = start_tunnel(ends, tmp_path)
    service, doomed = remote_state(sshd, config["key"]), remote_state(sshd, ends["key"])
    assert service is not None and doomed is not None
    log = Path(payload["keeper_log"])
    proxy.freeze()
    try:
        wait_for(lambda: re.search(r"link to \S+ lost", log.read_text()) is not None, 30, "the keeper to notice")
        sshd.run(f"kill {doomed['pid']}", check=True)
        time.sleep(OLD_LIMIT + 8)
        assert alive(payload["keeper_pid"]), log.read_text()
        refused_at_once(payload["port"])
    finally:
        proxy.thaw()
    still_served(sshd, config, payload, connection_dir, service)
    wait_for(lambda: not (connection_dir / f"{ends['key']}.json").exists(), 30, "the ended service's tunnel to close")
    refused_at_once(ended["port"])
    assert f"{config['key']}: closing the tunnel" not in log.read_text()


@pytest.mark.parametrize("keeper", KEEPERS)
def test_a_suspended_keeper_resumes_on_its_local_port(
        keeper: str, request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """A laptop's sleep: the keeper (or broker) is stopped, its link dies meanwhile, and after the resume the
    network takes longer to come back than tunnels used to try. The link is replaced and the same local
    port answers; nothing is relaunched or duplicated."""
    from remote_http_launcher.broker.registry import live_brokers

    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    config = glitch_config(make_config, keeper, watchdog_interval=1)
    payload = start_tunnel(config, tmp_path)
    service = remote_state(sshd, config["key"])
    assert service is not None
    holder = payload["keeper_pid"]
    os.kill(holder, signal.SIGSTOP)
    try:
        proxy.cut()  # the link died during the sleep
        proxy.freeze()  # and the network is not back yet
        time.sleep(5)
    finally:
        os.kill(holder, signal.SIGCONT)
    try:
        time.sleep(OLD_LIMIT + 8)
        refused_at_once(payload["port"])
    finally:
        proxy.thaw()
    still_served(sshd, config, payload, connection_dir, service)
    assert keeper_processes(str(connection_dir)) == ([] if keeper == "broker" else [holder])
    assert [owner.pid for _, owner in live_brokers()] == ([holder] if keeper == "broker" else [])
    assert "reconnected" in Path(payload["keeper_log"]).read_text()


def test_a_reconnect_timeout_closes_a_tunnel_whose_link_stays_lost(
        request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """With `reconnect_timeout`, a link still lost when it passes closes the tunnel (its client file goes),
    however long the watchdog interval."""
    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    config = glitch_config(make_config, "process", watchdog_interval=60, reconnect_timeout=5)
    payload = start_tunnel(config, tmp_path)
    proxy.freeze()
    try:
        wait_for(lambda: not alive(payload["keeper_pid"]), 60, "the keeper to give up")
    finally:
        proxy.thaw()
    text = Path(payload["keeper_log"]).read_text()
    assert re.search(r"stopping: link to \S+ lost and not restored \(reconnect_timeout 5 s passed\)",
                     text), text
    assert not (connection_dir / f"{config['key']}.json").exists()


# ---------------------------------------------------------------- a keeper's head start (ssh/dialahead.py)

def test_a_keeper_connects_ahead_to_the_last_address_and_logs_in_only_where_the_config_says(
        request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, connection_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """The next keeper for a target is told where the last login connected (`--dial`) and connects there while
    it imports: its login takes that connection, the only one. When an Include newly matches a file that moves
    the target (its signature cannot tell), the early connection carries nothing and the login goes where the
    config now says."""
    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    ssh_config = client_home / ".ssh" / "config"
    ssh_config.write_text("Include config.d/*\n" + ssh_config.read_text())
    config = make_config(network_interface="127.0.0.1", tunnel=True)
    payload = start_tunnel(config, tmp_path)
    assert dialahead.guess(ALIAS) == ("127.0.0.1", proxy.port)

    def next_keeper() -> tuple[dict[str, Any], list[bytes]]:
        os.kill(payload["keeper_pid"], signal.SIGTERM)
        wait_for(lambda: not alive(payload["keeper_pid"]), 15, "the keeper to exit")
        (connection_dir / f"{config['key']}.json").unlink(missing_ok=True)
        proxy.reset()
        started = start_tunnel(config, tmp_path)
        return started, Path(f"/proc/{started['keeper_pid']}/cmdline").read_bytes().split(b"\0")

    payload, argv = next_keeper()
    assert argv[argv.index(b"--dial"):][:3] == [b"--dial", b"127.0.0.1", str(proxy.port).encode()]
    assert proxy.counters.connections == 1 and get(payload["port"]) == b"ok\n"

    with LinkProxy((sshd.host, sshd.port)) as moved:
        (client_home / ".ssh" / "config.d").mkdir()
        (client_home / ".ssh" / "config.d" / "moved").write_text(f"Host {ALIAS}\n    Port {moved.port}\n")
        payload, argv = next_keeper()
        assert b"--dial" in argv and get(payload["port"]) == b"ok\n"
        assert (proxy.counters.connections, proxy.counters.bytes_up) == (1, 0)  # dialled ahead, never used
        assert moved.counters.connections == 1
        assert dialahead.guess(ALIAS) == ("127.0.0.1", moved.port)


def test_a_broker_connects_ahead_to_the_last_address_too(
        request: pytest.FixtureRequest, sshd: SSHServer, client_home: Path, rhl_dir: Path,
        make_config: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    """A broker started for a target the last login reached directly gets `--dial` as a keeper does and
    connects there at once; its login still goes where the config says (here, moved by an Include)."""
    from remote_http_launcher.broker.registry import live_brokers
    from tests.conftest import stop_brokers

    proxy = connect_via("direct", request, sshd, client_home, tmp_path)
    ssh_config = client_home / ".ssh" / "config"
    ssh_config.write_text("Include config.d/*\n" + ssh_config.read_text())
    config = make_config(connection_persist=60)
    start_tunnel(config, tmp_path)  # the broker's login is remembered
    stop_brokers(rhl_dir / "brokers")
    (rhl_dir / "client" / f"{config['key']}.json").unlink()
    with LinkProxy((sshd.host, sshd.port)) as moved:
        (client_home / ".ssh" / "config.d").mkdir()
        (client_home / ".ssh" / "config.d" / "moved").write_text(f"Host {ALIAS}\n    Port {moved.port}\n")
        proxy.reset()
        start_tunnel(config, tmp_path)
        [(_, owner)] = live_brokers(rhl_dir / "brokers")
        argv = Path(f"/proc/{owner.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--dial"):][:3] == [b"--dial", b"127.0.0.1", str(proxy.port).encode()]
        assert (proxy.counters.connections, proxy.counters.bytes_up) == (1, 0)  # dialled ahead, never used
        assert moved.counters.connections == 1
        stop_brokers(rhl_dir / "brokers")  # its link goes through `moved`, which closes now
