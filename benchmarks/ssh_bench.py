"""SSH metrics over a real OpenSSH server (tests/sshd.py), on loopback and behind a delaying proxy.

The server runs in its own network namespace; the client reaches it through
`LinkProxy` on 127.0.0.1 (~/.ssh/config's HostName/Port point there, and
HostKeyAlias keeps the real server's known_hosts entry). In direct mode the
service binds a fixed port in the namespace and a second proxy on the same
port of 127.0.0.1 carries the client's own handshake, so every round trip of
a run crosses the slow link.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.linkproxy import LinkProxy
from tests.ssh_client import stop_services_script

from .common import (
    CLEANUP,
    TINY_SERVICE,
    Row,
    at_most,
    base_env,
    launcher_argv,
    log,
    pids_with_cmdline,
    ratio,
    reference,
    timed_run,
    write_config,
)
from .original import ORIGINAL_VERSION, Original, ssh_wrapper

RECONNECT_VS_ORIGINAL = 0.05  # ours with a live broker / the original's reconnect
COLD_TUNNEL_VS_ORIGINAL = 0.2  # ours (no broker yet) / the original's cold launch, tunnel: true
ORIGINAL_LABEL = f"original {ORIGINAL_VERSION}"
# With a live connection broker: no login, only the commands' own round trips.
BROKER_TARGETS = {"reconnect": 0.25, "status": 0.2, "cold launch": 0.6}
PERSIST = 600.0  # connection_persist of the broker cases; the others run with 0: a login per command
REMOTE_CLEANUP = stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-bench"')
# As after `stop`: services killed, status and lock files gone, the state directory kept.
REMOTE_STOP = stop_services_script('rm -f "$HOME/.remote-http-launcher/server/"*.json '
                                   '"$HOME/.remote-http-launcher/server/"*.lock')


class Unavailable(Exception):
    pass


@dataclass
class Link:
    """One way to reach the server: an ~/.ssh/config alias behind a proxy with a given RTT."""

    rtt: float
    alias: str
    ssh_proxy: LinkProxy
    http_proxy: LinkProxy | None
    service_port: int  # fixed in direct mode (the HTTP proxy listens on the same port), else 0

    @property
    def label(self) -> str:
        return "loopback" if self.rtt == 0 else f"{self.rtt * 1000:g} ms RTT"


@dataclass
class SSHSetup:
    account: Any
    server: Any
    root: Path
    client_home: Path
    state_dir: Path
    remote_service: str
    links: list[Link] = field(default_factory=list)

    @classmethod
    def create(cls, rtts: list[float]) -> SSHSetup:
        import pytest

        from tests import sshd as harness

        try:
            harness._check_prerequisites()
            account = harness.SSHAccount.create()
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            raise Unavailable(str(exc)) from None
        CLEANUP.push("test user", account.close)
        ns = harness.NetNamespace.try_create()
        if ns is not None:
            CLEANUP.push("network namespace", lambda: ns.close(uid=account.uid))
        server = harness.launch_sshd(account, "bench", ns)
        CLEANUP.push("sshd", server.close)
        root = Path(tempfile.mkdtemp(prefix="rhlbench-ssh-"))
        CLEANUP.push(f"client workspace {root}", lambda: _remove_workspace(root))
        remote_service = f"{server.home}/tiny_service.py"
        shutil.copy(TINY_SERVICE, remote_service)
        os.chown(remote_service, account.uid, account.gid)
        setup = cls(account, server, root, root / "home", root / "state", remote_service)
        setup.client_home.mkdir()
        CLEANUP.push("remote services", setup.clean_remote)
        CLEANUP.push("connection brokers", setup.disconnect)
        for rtt in rtts:
            setup.links.append(setup._make_link(rtt))
        return setup

    def _make_link(self, rtt: float) -> Link:
        server = self.server
        proxy = LinkProxy((server.host, server.port), rtt).start()
        CLEANUP.push("ssh proxy", proxy.close)
        alias = f"bench{len(self.links)}"
        server.write_ssh_config(self.client_home, alias, extra={
            "HostName": "127.0.0.1", "Port": str(proxy.port),
            "HostKeyAlias": server.host if server.port == 22 else f"[{server.host}]:{server.port}"})
        http_proxy, port = None, 0
        if server.netns:  # the service's port in the namespace is free on our 127.0.0.1 too
            for _ in range(20):
                port = _free_port()
                try:
                    http_proxy = LinkProxy((server.host, port), rtt, listen=("127.0.0.1", port)).start()
                    break
                except OSError:
                    continue
            assert http_proxy is not None
            CLEANUP.push("http proxy", http_proxy.close)
        return Link(rtt, alias, proxy, http_proxy, port)

    # ---- configs and runs ----
    def config(self, link: Link, *, tunnel: bool, persist: float = 0.0, suffix: str = "") -> Path:
        key = f"bench-{link.alias}-{'tunnel' if tunnel else 'direct'}{'-broker' if persist else ''}{suffix}"
        port = 0 if tunnel else link.service_port
        direct_host = "127.0.0.1" if link.http_proxy else self.server.host
        data = {
            "workdir": "~/rhl-bench",
            "hostname": "127.0.0.1" if tunnel else direct_host,
            "ssh_hostname": link.alias,
            "network_interface": "127.0.0.1" if tunnel else "0.0.0.0",
            "tunnel": tunnel,
            "key": key,
            "command": f"{self.server.python} {shlex.quote(self.remote_service)} --status-file {{status_file}} "
                       f"--host {{network_interface}} --port-range {port} {port}",
            "handshake": "healthcheck",
            "connection_persist": persist,
        }
        path = self.root / f"{key}.yaml"
        write_config(path, data)
        return path

    def env(self) -> dict[str, str]:
        return base_env(HOME=str(self.client_home), REMOTE_HTTP_LAUNCHER_DIR=str(self.state_dir))

    def client_file(self, config: Path) -> Path:
        return self.state_dir / "client" / f"{config.stem}.json"

    def forget_client(self, config: Path) -> None:
        """As after a reboot of this machine: no client file, no tunnel keeper."""
        _kill_matching(str(self.root))
        self.client_file(config).unlink(missing_ok=True)

    def clean_remote(self, *, keep_state_dir: bool = False) -> None:
        self.server.run(REMOTE_STOP if keep_state_dir else REMOTE_CLEANUP, timeout=30)

    def disconnect(self) -> None:
        """End the connection brokers of the benchmark's client."""
        timed_run(launcher_argv("disconnect"), self.env(), timeout=60)

    def run(self, link: Link, config: Path, command: str = "up") -> dict[str, float]:
        link.ssh_proxy.reset()
        if link.http_proxy:
            link.http_proxy.reset()
        argv = launcher_argv(config) if command == "up" else launcher_argv(command, str(config))
        elapsed, _ = timed_run(argv, self.env(), timeout=180)
        time.sleep(0.05)  # the proxy counts the last bytes asynchronously
        return {"wall": elapsed, "ssh_rt": link.ssh_proxy.counters.round_trips(),
                "ssh_connections": link.ssh_proxy.counters.connections,
                "http_rt": link.http_proxy.counters.round_trips() if link.http_proxy else 0}


class OriginalOverSSH:
    """The original 0.2.0 against the same server and links: its own $HOME, and `ssh` (which it runs by
    name) reading the benchmark's ~/.ssh/config. Its tunnel monitors and `ssh -L` children name the
    workspace on their command lines (TMPDIR, the config path), so `forget` finds them."""

    def __init__(self, setup: SSHSetup, original: Original) -> None:
        self.setup = setup
        self.original = original
        self.home = setup.root / "original-home"
        self.home.mkdir(exist_ok=True)
        tmp = setup.root / "original-tmp"
        tmp.mkdir(exist_ok=True)
        bin_dir = ssh_wrapper(setup.root / "original-bin", setup.client_home / ".ssh" / "config")
        self.env = {**Original.env(self.home, bin_dir), "TMPDIR": str(tmp)}

    def forget(self, config: Path) -> None:
        _kill_matching(str(self.setup.root))
        (Original.state_dir(self.home) / "client" / f"{config.stem}.json").unlink(missing_ok=True)

    def run(self, link: Link, config: Path, expect: str) -> dict[str, float]:
        link.ssh_proxy.reset()
        if link.http_proxy:
            link.http_proxy.reset()
        elapsed, proc = timed_run(self.original.argv(config, "--log-level", "basic"), self.env, timeout=300)
        out = proc.stderr.decode(errors="replace")
        if f"done: {expect}" not in out:
            raise RuntimeError(f"{ORIGINAL_LABEL} did not end with 'done: {expect}': {out.strip()[-300:]}")
        time.sleep(0.05)
        return {"wall": elapsed, "ssh_rt": link.ssh_proxy.counters.round_trips(),
                "ssh_connections": link.ssh_proxy.counters.connections,
                "http_rt": link.http_proxy.counters.round_trips() if link.http_proxy else 0}

    def measure(self, link: Link, runs: int, *, tunnel: bool, cold: bool) -> list[dict[str, float]]:
        """Reconnect (service running, no client file) or cold launch (service stopped, state kept)."""
        config = self.setup.config(link, tunnel=tunnel, suffix="-original")
        self.setup.clean_remote()
        self.forget(config)
        self.run(link, config, "launched")  # warm-up
        samples = []
        for i in range(runs + 1):
            self.forget(config)
            if cold:
                self.setup.clean_remote(keep_state_dir=True)
            result = self.run(link, config, "launched" if cold else "reused-remote")
            if i:
                samples.append(result)
        self.forget(config)
        return samples


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_matching(fragment: str) -> None:
    """Kill local processes started for the benchmark (tunnel keepers name our client directory)."""
    for pid in pids_with_cmdline(fragment):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _remove_workspace(root: Path) -> None:
    _kill_matching(str(root))
    shutil.rmtree(root, ignore_errors=True)


def _summary(samples: list[dict[str, float]]) -> str:
    ssh = statistics.median(s["ssh_rt"] for s in samples)
    conns = statistics.median(s["ssh_connections"] for s in samples)
    http = statistics.median(s["http_rt"] for s in samples)
    text = f"{ssh:g} SSH round trips over {conns:g} connection(s)"
    return text + (f" + {http:g} direct HTTP" if http else "")


def measure(setup: SSHSetup, link: Link, runs: int, *, tunnel: bool, cold: str | None, persist: float = 0.0,
            command: str = "up") -> list[dict[str, float]]:
    """`cold`: None (reconnect), "stopped" (state directory kept) or "fresh" (a host never used).

    `persist` > 0: through the destination's connection broker, which the warm-up starts (and which
    `forget_client` leaves running, with the tunnels it keeps, as a reboot would not)."""
    config = setup.config(link, tunnel=tunnel, persist=persist)
    setup.forget_client(config)
    # warm-up: a cold launch, then one run of the measured kind
    setup.clean_remote()
    setup.run(link, config)
    samples = []
    for i in range(runs + 1):
        setup.forget_client(config)
        if cold:
            setup.clean_remote(keep_state_dir=cold == "stopped")
        if command != "up":
            setup.run(link, config)  # the client file it needs (the warm-up's was forgotten)
        result = setup.run(link, config, command)
        if i:
            samples.append(result)
    setup.forget_client(config)
    return samples


def reconnect_imports(setup: SSHSetup, link: Link) -> Row:
    """What a reconnect process spends on imports before any round trip (python -X importtime)."""
    from .local_bench import import_profile

    config = setup.config(link, tunnel=False)
    setup.forget_client(config)
    setup.run(link, config)  # make sure the service runs
    setup.forget_client(config)
    profile = import_profile(config, setup.env())
    setup.forget_client(config)
    roots = profile["top_level_us"]
    parts = ", ".join(f"{name} {roots[name] / 1000:.0f} ms" for name in
                      sorted(roots, key=lambda n: -roots[n])[:4])
    return Row("remote reconnect process: imports (-X importtime, top level cumulative)", profile["total_us"], "µs",
               note=parts)


def run_ssh(runs: int, rtt: float, only: set[str],
            original: Original | str = "not measured") -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    if "ssh" not in only:
        return rows, extra
    log("setting up sshd (throwaway user, network namespace, delaying proxies)")
    try:
        setup = SSHSetup.create([0.0, rtt])
    except Unavailable as exc:
        return [Row("SSH metrics", f"skipped: {exc}", "")], extra
    extra["ssh_server"] = f"{setup.server.host}:{setup.server.port} (netns {setup.server.netns})"
    raw: dict[str, Any] = {}
    fast: dict[tuple[str, bool, float], float] = {}
    slow_medians: dict[tuple[str, bool, float], float] = {}
    for link in setup.links:
        slow = link.rtt > 0
        kinds: list[tuple[str, bool, str | None, float, str]] = [
            ("reconnect", False, None, 0.0, "up"), ("reconnect", True, None, 0.0, "up"),
            ("cold launch", False, "stopped", 0.0, "up"), ("cold launch", True, "stopped", 0.0, "up")]
        if slow:
            kinds.append(("cold launch on a fresh host", False, "fresh", 0.0, "up"))
        kinds += [("reconnect", False, None, PERSIST, "up"), ("reconnect", True, None, PERSIST, "up"),
                  ("status", False, None, PERSIST, "status"), ("cold launch", False, "stopped", PERSIST, "up"),
                  ("cold launch", True, "stopped", PERSIST, "up")]
        for name, tunnel, cold, persist, command in kinds:
            brokered = ", live broker" if persist else ""
            log(f"SSH {name}{brokered} (tunnel: {str(tunnel).lower()}) on {link.label}")
            try:
                samples = measure(setup, link, runs, tunnel=tunnel, cold=cold, persist=persist, command=command)
            except RuntimeError as exc:
                rows.append(Row(f"remote {name}{brokered}, tunnel: {str(tunnel).lower()}, {link.label}",
                                f"error: {str(exc).splitlines()[-1][:200]}", "", "", False))
                continue
            walls = [s["wall"] for s in samples]
            what = {None: "service running, no client file", "stopped": "service stopped, state dir kept",
                    "fresh": "no ~/.remote-http-launcher yet"}[cold]
            if command == "status":
                what = "service running"
            metric = f"remote {name}{brokered} ({what}), tunnel: {str(tunnel).lower()}, {link.label}"
            note = _summary(samples)
            if not slow:
                fast[(name, tunnel, persist)] = statistics.median(walls)
            else:
                slow_medians[(name, tunnel, persist)] = statistics.median(walls)
                if (name, tunnel, persist) in fast:
                    note += (f"; {(statistics.median(walls) - fast[(name, tunnel, persist)]) / link.rtt:.1f} RTT "
                             "slower than loopback")
            if slow and persist and name in BROKER_TARGETS:
                rows.append(at_most(metric, walls, BROKER_TARGETS[name], note))
            else:
                rows.append(reference(metric, walls, note))
            raw[metric] = samples
    if isinstance(original, Original):
        rows += _original_ratios(setup, setup.links[-1], runs, original, slow_medians, raw)
    else:
        rows.append(Row(f"remote reconnect / cold launch, {ORIGINAL_LABEL}", None, note=original))
    extra["ssh_samples"] = raw
    rows.append(reconnect_imports(setup, setup.links[0]))
    from .profile_ssh import profile

    log("per-step SSH profile (in-process from this checkout, tunnel: false)")
    texts, data = [], []
    for link in reversed(setup.links):
        try:
            text, record = profile(setup, link)
        except Exception as exc:  # the profile is a diagnosis; never lose the table for it
            text, record = f"profile on {link.label} failed: {exc!r}", {}
        texts.append(text)
        data.append(record)
    extra["ssh_profile_text"] = "\n\n".join(texts)
    extra["ssh_profile"] = data
    return rows, extra


def _original_ratios(setup: SSHSetup, link: Link, runs: int, original: Original,
                     ours: dict[tuple[str, bool, float], float], raw: dict[str, Any]) -> list[Row]:
    """The original's reconnect and cold tunnel launch on the slow link, and ours as a ratio of them:
    reconnect with a live broker (tunnel false and true), and a cold launch with a tunnel and no
    broker running yet (the first `up` of the day: it logs in, as the original does)."""
    rows: list[Row] = []
    runner = OriginalOverSSH(setup, original)
    cases = [("reconnect", False, False, ("reconnect", False, PERSIST), RECONNECT_VS_ORIGINAL),
             ("reconnect", True, False, ("reconnect", True, PERSIST), RECONNECT_VS_ORIGINAL),
             ("cold launch", True, True, ("cold launch", True, 0.0), COLD_TUNNEL_VS_ORIGINAL)]
    for name, tunnel, cold, key, limit in cases:
        label = f"remote {name}, tunnel: {str(tunnel).lower()}, {link.label}"
        log(f"SSH {name} (tunnel: {str(tunnel).lower()}) on {link.label}, {ORIGINAL_LABEL}")
        try:
            samples = runner.measure(link, runs, tunnel=tunnel, cold=cold)
        except (RuntimeError, OSError) as exc:
            rows.append(Row(f"{label}, {ORIGINAL_LABEL}", f"error: {str(exc).splitlines()[-1][:200]}", ""))
            continue
        walls = [s["wall"] for s in samples]
        theirs = statistics.median(walls)
        rows.append(reference(f"{label}, {ORIGINAL_LABEL} (reference)", walls, _summary(samples)))
        raw[f"{label}, {ORIGINAL_LABEL}"] = samples
        if key not in ours:
            continue
        broker = "ours with a live broker" if key[2] else "ours without a broker running (it logs in)"
        rows.append(ratio(f"{label}: {broker} / {ORIGINAL_LABEL}", ours[key] / theirs, limit,
                          f"{ours[key]:.3f} s / {theirs:.3f} s"))
    return rows


