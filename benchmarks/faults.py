"""Faults and load: the connection broker's fault matrix, rerun against a real OpenSSH server.

`python -m benchmarks.faults` (from the repository root, as root: tests/sshd.py makes a throwaway user,
an sshd and a network namespace) runs the launcher's CLI, as users run it, through these scenarios and
prints a Markdown table of what it measured (`--json` for JSON). Sizes are options, so a shared or small
machine can run a smaller matrix; `--only` picks scenarios.

- soak: a mixed run of up/status/list/logs/stop/connections over several keys (one thread per key, so
  each command's expected exit code is known), then many `status` in parallel; failures counted, the
  broker's memory, descriptors and threads before and after.
- race: many simultaneous `up` of a few keys with no broker yet: one broker, one login, one service
  and one local port per key.
- tunnels: many tunnels through one broker: its memory and threads, every tunnel answering, and how
  long `list --host` takes.
- frozen: the link to the server dropped silently (the namespace's interface down) for a while, with
  an `up` and a `status` running; and the sshd processes serving the broker killed, with a `status`
  right after: no tunnel torn down, no keeper process, the same local port.
- killed: the broker SIGKILLed while it keeps several tunnels: the next command's broker restores
  every one of them on its port.
- descriptors: under `ulimit -n 256`, 300 idle connections to the broker's socket, then 300 TCP
  connections through a tunnel's local port: commands still served, through the broker.
- stopped: the broker SIGSTOPped: `status`, `connections` and `disconnect` each go on within seconds.
- requeue (only when asked for: it needs the test SLURM cluster): a tunnelled job requeued by SLURM:
  `status` says it is queued again (exit 3), and the tunnel follows its new run to another node on the
  same local port.

Everything it starts is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .common import CLEANUP, PYTHON, ROOT, Row, base_env, dump_json, log, markdown, run_cwd

SCENARIOS = ("soak", "race", "tunnels", "frozen", "killed", "descriptors", "stopped")
OPTIONAL = ("requeue",)  # needs the test SLURM cluster (tests/slurm.py), and its machine lock
DEMO_SERVICE = ROOT / "examples" / "demo_service.py"
ACCEPTED = "Accepted publickey"  # one line of the sshd's log per login
LOW_LIMIT = 256  # macOS's default `ulimit -n`
FLOOD = 300
COMMAND_TIMEOUT = 180.0
RESTORE_WAIT = 60.0
STOPPED_BOUND = 30.0  # what a command may take while its broker is stopped (the client's bounds and a login)
MIX = {"up": 3, "status": 4, "logs": 2, "list": 1, "connections": 1, "stop": 1}
NOT_RUNNING = 3


@dataclass
class Outcome:
    """What one CLI run did."""

    argv: list[str]
    code: int | None  # None: it timed out
    stdout: str
    stderr: str
    seconds: float

    def line(self) -> str:
        tail = (self.stderr.strip().splitlines() or ["(no stderr)"])[-1][:200]
        return f"{' '.join(self.argv[:2])} exit {self.code} after {self.seconds:.1f} s: {tail}"


@dataclass
class Rig:
    """The server, a client HOME whose ~/.ssh/config names it, and the demo service there."""

    server: Any
    alias: str
    root: Path
    home: Path
    demo: str
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Rig:
        from tests import sshd as harness
        from tests.ssh_client import ALIAS

        harness._check_prerequisites()
        account = harness.SSHAccount.create()
        CLEANUP.push("test user", account.close)
        ns = harness.NetNamespace.try_create()
        if ns is None:
            raise SystemExit("the frozen-link runs need a network namespace (run as root with `ip netns`)")
        CLEANUP.push("network namespace", lambda: ns.close(uid=account.uid))
        server = harness.launch_sshd(account, "faults", ns)
        CLEANUP.push("sshd", server.close)
        root = Path(tempfile.mkdtemp(prefix="rhlfaults-"))
        CLEANUP.push(f"client workspace {root}", lambda: shutil.rmtree(root, ignore_errors=True))
        home = root / "home"
        home.mkdir()
        server.write_ssh_config(home, ALIAS)
        demo = f"{server.home}/demo_service.py"
        shutil.copy(DEMO_SERVICE, demo)
        os.chown(demo, account.uid, account.gid)
        rig = cls(server, ALIAS, root, home, demo, base_env(HOME=str(home)))
        CLEANUP.push("remote services", rig.clean_remote)
        CLEANUP.push("brokers and keepers", rig.end_local)
        return rig

    # ---- state and processes ----
    @property
    def state(self) -> Path:
        return self.home / ".remote-http-launcher"

    def brokers(self) -> list[int]:
        from remote_http_launcher.broker.registry import live_brokers

        if not (self.state / "brokers").is_dir():
            return []
        return [owner.pid for _files, owner in live_brokers(self.state / "brokers")]

    def broker_files(self) -> Any:
        from remote_http_launcher.broker.registry import live_brokers

        ((files, _owner),) = live_brokers(self.state / "brokers")
        return files

    def broker(self) -> int:
        pids = self.brokers()
        if len(pids) != 1:
            raise RuntimeError(f"expected one broker, found {len(pids)}")
        return pids[0]

    def keepers(self) -> list[int]:
        from tests.remote import keeper_processes

        return keeper_processes(str(self.state / "client"))

    def logins(self) -> int:
        return int(self.server.log_text().count(ACCEPTED))

    def client_record(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.state / "client" / f"{key}.json").read_text()))
        except (OSError, ValueError):
            return None

    def services_started(self, key: str) -> int:
        out = self.server.run(f"grep -c 'demo service starting' .remote-http-launcher/server/{key}.log").stdout
        return int(out.strip() or 0)

    def end_local(self) -> None:
        from remote_http_launcher.processes import terminate

        for pid in self.brokers():
            terminate(pid)
        for pid in self.keepers():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def clean_remote(self) -> None:
        from tests.ssh_client import stop_services_script

        self.server.set_link(True)
        self.server.run(stop_services_script('rm -rf "$HOME/.remote-http-launcher" "$HOME/rhl-work"'))

    def reset(self) -> None:
        """No broker, keeper, service or state left from the scenario before."""
        self.end_local()
        deadline = time.monotonic() + 30
        while self.brokers() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.clean_remote()
        shutil.rmtree(self.state / "client", ignore_errors=True)

    # ---- configs and runs ----
    def config(self, key: str, **fields: Any) -> Path:
        """The demo service under `key` with a tunnel (to the server's loopback unless `fields` say otherwise)."""
        from tests.ssh_client import demo_config

        data = demo_config(self.server, self.demo, key, **{"tunnel": True, "network_interface": "127.0.0.1",
                                                             **fields})
        path = self.root / f"{key}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def run(self, *args: str | Path, limit: int | None = None, timeout: float = COMMAND_TIMEOUT) -> Outcome:
        argv = [PYTHON, "-m", "remote_http_launcher", *map(str, args)]

        def lower_limit() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        started = time.monotonic()
        try:
            proc = subprocess.run(argv, env=self.env, cwd=run_cwd(), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=timeout, preexec_fn=lower_limit)
        except subprocess.TimeoutExpired as exc:
            return Outcome(argv[3:], None, str(exc.stdout or ""), str(exc.stderr or ""), time.monotonic() - started)
        return Outcome(argv[3:], proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    def up(self, key: str, limit: int | None = None, **fields: Any) -> dict[str, Any]:
        outcome = self.run(self.config(key, **fields), "--json", limit=limit)
        if outcome.code != 0:
            raise RuntimeError(outcome.line())
        return dict(json.loads(outcome.stdout))


def figures(pid: int) -> dict[str, float]:
    """A process's resident memory (MB), open descriptors and threads."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(status["Threads"])}


def shown(figs: dict[str, float]) -> str:
    return f"{figs['rss_mb']:.1f} MB, {figs['fds']:g} fds, {figs['threads']:g} threads"


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=10) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition` held, or None when it did not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def judged(metric: str, value: float | str, ok: bool, target: str, unit: str = "", note: str = "") -> Row:
    return Row(metric, value, unit, target, ok, note)


def info(metric: str, value: float | str, unit: str = "", note: str = "") -> Row:
    return Row(metric, value, unit, "", None, note)


# ---------------------------------------------------------------- soak

def soak(rig: Rig, keys: int, mixed: int, statuses: int, workers: int, seed: int) -> list[Row]:
    names = [f"soak-{n}" for n in range(keys)]
    for name in names:
        rig.up(name)
    broker = rig.broker()
    before = figures(broker)
    logins = rig.logins()
    failures: list[str] = []
    rng = random.Random(seed)
    plans = {name: rng.choices(list(MIX), weights=list(MIX.values()), k=mixed // keys) for name in names}
    done = [0]

    def progress() -> None:
        done[0] += 1  # one thread per key: a lost count would only make the log line late
        if done[0] % 100 == 0:
            log(f"soak: {done[0]} commands, {len(failures)} failures")

    def expected(op: str, running: bool) -> set[int]:
        if op in ("status", "logs"):
            return {0} if running else {NOT_RUNNING}
        return {0}

    def drive(name: str) -> None:
        config, running = rig.config(name), True
        for op in plans[name]:
            args: tuple[str | Path, ...] = {
                "up": (config,), "status": ("status", config), "logs": ("logs", config, "--tail", "5"),
                "list": ("list",), "connections": ("connections",), "stop": ("stop", config)}[op]
            outcome = rig.run(*args)
            if outcome.code not in expected(op, running) or "Traceback" in outcome.stderr:
                failures.append(outcome.line())
            progress()
            running = (op != "stop") and (running or op == "up")

    started = time.monotonic()
    with ThreadPoolExecutor(keys) as pool:
        list(pool.map(drive, names))
    mixed_seconds = time.monotonic() - started
    for name in names:  # every key running for the status burst
        rig.up(name)
    middle = figures(broker) if broker in rig.brokers() else None
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        def status(n: int) -> Outcome:
            outcome = rig.run("status", rig.config(names[n % keys]))
            progress()
            return outcome

        outcomes = list(pool.map(status, range(statuses)))
    status_seconds = time.monotonic() - started
    failures += [o.line() for o in outcomes if o.code != 0]
    brokers = rig.brokers()
    after = figures(broker) if broker in brokers else None
    extra_logins = rig.logins() - logins
    rows = [
        judged(f"soak: {mixed // keys * keys} mixed commands over {keys} keys + {statuses} status "
               f"({workers} at a time)", len(failures), not failures, "0 failures", "count",
               f"{mixed_seconds:.0f} s + {status_seconds:.0f} s" + (f"; first: {failures[0]}" if failures else "")),
        judged("soak: brokers at the end (the same one)", len(brokers), brokers == [broker], "1", "count"),
        judged("soak: logins during the soak (all through the broker)", extra_logins, extra_logins == 0, "0", "count"),
        info("soak: broker before → after the mix → after the status burst",
             f"{shown(before)} → {shown(middle) if middle else 'gone'} → {shown(after) if after else 'gone'}"),
    ]
    for name in names:
        rig.run("stop", rig.config(name))
    return rows


# ---------------------------------------------------------------- racing `up`

def race(rig: Rig, racers: int, keys: int) -> list[Row]:
    rig.reset()
    names = [f"race-{n}" for n in range(keys)]
    configs = [rig.config(name) for name in names]
    logins = rig.logins()
    barrier = threading.Barrier(racers)

    def racer(n: int) -> Outcome:
        barrier.wait()
        return rig.run(configs[n % keys], "--json")

    started = time.monotonic()
    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(racer, range(racers)))
    seconds = time.monotonic() - started
    failures = [o.line() for o in outcomes if o.code != 0]
    ports: dict[int, set[int]] = {}
    for n, outcome in enumerate(outcomes):
        if outcome.code == 0:
            ports.setdefault(n % keys, set()).add(json.loads(outcome.stdout)["port"])
    started_services = [rig.services_started(name) for name in names]
    brokers, keepers, extra = rig.brokers(), rig.keepers(), rig.logins() - logins
    rows = [
        judged(f"race: {racers} simultaneous `up` of {keys} keys, no broker yet", len(failures), not failures,
               "0 failures", "count", f"{seconds:.0f} s" + (f"; first: {failures[0]}" if failures else "")),
        judged("race: brokers", len(brokers), len(brokers) == 1, "1", "count"),
        judged("race: logins", extra, extra == 1, "1", "count"),
        judged("race: services started per key", "/".join(map(str, started_services)),
               started_services == [1] * keys, "1 each"),
        judged("race: local ports per key", "/".join(str(len(ports.get(n, ()))) for n in range(keys)),
               all(len(ports.get(n, ())) == 1 for n in range(keys)), "1 each"),
        judged("race: tunnel keeper processes", len(keepers), not keepers, "0", "count"),
    ]
    for config in configs:
        rig.run("stop", config)
    return rows


# ---------------------------------------------------------------- many tunnels through one broker

def tunnels(rig: Rig, count: int, workers: int) -> list[Row]:
    rig.reset()
    names = [f"tun-{n}" for n in range(count)]
    rig.up(names[0])
    broker = rig.broker()
    empty = figures(broker)
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        payloads = [rig.up(names[0]), *pool.map(rig.up, names[1:])]
    seconds = time.monotonic() - started
    full = figures(broker)
    answering = sum(answers(p["port"]) for p in payloads)
    listing = [rig.run("list", "--host", rig.alias) for _ in range(3)]
    listed = listing[-1].stdout.count("running")
    rows = [
        info(f"tunnels: {count} tunnels opened ({workers} `up` at a time)", seconds, "s"),
        judged("tunnels: brokers", len(rig.brokers()), rig.brokers() == [broker], "1", "count"),
        info(f"tunnels: broker with 1 → {count} tunnels", f"{shown(empty)} → {shown(full)}"),
        judged("tunnels: answering through their local ports", answering, answering == count, f"{count}", "count"),
        judged("tunnels: keeper processes", len(rig.keepers()), not rig.keepers(), "0", "count"),
        judged(f"tunnels: `list --host` (median of 3, {listed} running)",
               statistics.median(o.seconds for o in listing), all(o.code == 0 for o in listing), "exit 0", "s"),
    ]
    rig.reset()
    return rows


# ---------------------------------------------------------------- frozen link, killed sshd session

def frozen(rig: Rig, runs: int, freeze: float, kills: int) -> list[Row]:
    from tests import sshd as harness

    rig.reset()
    rows: list[Row] = []
    name = "frozen"
    config = rig.config(name)
    payload = rig.up(name)
    broker = rig.broker()
    torn: list[str] = []
    commands: list[str] = []
    recoveries: list[float] = []

    def check(run: str) -> None:
        recovered = wait_until(lambda: answers(payload["port"]), RESTORE_WAIT)
        if recovered is not None:
            recoveries.append(recovered)
        again = rig.up(name)  # a claim after the outage: reused, never replaced
        record = rig.client_record(name) or {}
        problems = [what for what, bad in (
            ("not answering", recovered is None),
            (f"new port {again['port']}", again["port"] != payload["port"]),
            ("keeper process", bool(rig.keepers())),
            ("other broker", rig.brokers() != [broker]),
            ("kept by another process", record.get("keeper_pid") != broker)) if bad]
        if problems:
            torn.append(f"{run}: {', '.join(problems)}")

    for n in range(runs):
        logins = rig.logins()
        rig.server.set_link(False)
        with ThreadPoolExecutor(2) as pool:
            time.sleep(2)
            status = pool.submit(rig.run, "status", config)
            time.sleep(freeze / 2)
            up = pool.submit(rig.run, config, "--json")
            time.sleep(freeze / 2 - 2)
            rig.server.set_link(True)
            for outcome in (status.result(), up.result()):
                commands.append(f"{outcome.argv[0] if outcome.argv[0] == 'status' else 'up'} "
                                f"{outcome.code} in {outcome.seconds:.0f} s")
        check(f"frozen run {n + 1}")
        log(f"frozen run {n + 1}: {commands[-2:]}; {rig.logins() - logins} logins")
    for n in range(kills):
        listener = rig.server._proc.pid
        victims = harness._connection_pids(listener)
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        outcome = rig.run("status", config)
        commands.append(f"status after the kill {outcome.code} in {outcome.seconds:.0f} s")
        check(f"sshd killed {n + 1}")
    rows += [
        judged(f"frozen: link dropped {freeze:g} s with `status` and `up` running ({runs} runs), then the "
               f"sshd processes serving the broker killed with a `status` right after ({kills} runs): "
               f"tunnel replaced or moved", len(torn), not torn, "0", "count", "; ".join(torn)),
        info("frozen: the commands during the outage (exit code, time)", "; ".join(commands)),
        info("frozen: tunnel answering again after the link came back (max)",
             max(recoveries) if recoveries else "never", "s" if recoveries else ""),
    ]
    rig.reset()
    return rows


# ---------------------------------------------------------------- broker killed

def killed(rig: Rig, count: int) -> list[Row]:
    rig.reset()
    names = [f"kill-{n}" for n in range(count)]
    payloads = {name: rig.up(name) for name in names}
    first = rig.broker()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: first not in rig.brokers(), 30)
    started = time.monotonic()
    outcome = rig.run("status", rig.config(names[0]))
    brokers = rig.brokers()
    second = brokers[0] if len(brokers) == 1 else None

    def restored() -> bool:
        return all((rig.client_record(name) or {}).get("keeper_pid") == second for name in names)

    waited = wait_until(restored, RESTORE_WAIT)
    seconds = time.monotonic() - started
    same = sum(answers(p["port"]) and (rig.client_record(n) or {}).get("port") == p["port"]
               for n, p in payloads.items())
    rows = [
        judged(f"killed: broker SIGKILLed with {count} tunnels, then one `status`: tunnels restored in the new "
               "broker on their ports", same, same == count and waited is not None and second not in (None, first),
               f"{count}", "count", f"status exit {outcome.code}; all restored {seconds:.1f} s after the status "
                                    "began" if waited is not None else "not all restored"),
        judged("killed: keeper processes", len(rig.keepers()), not rig.keepers(), "0", "count"),
    ]
    rig.reset()
    return rows


# ---------------------------------------------------------------- out of file descriptors

@contextlib.contextmanager
def flood(family: socket.AddressFamily, address: str | tuple[str, int]) -> Iterator[int]:
    """FLOOD connections held open (as many as the other end lets in); yields how many connected."""
    held: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            sock = socket.socket(family)
            sock.settimeout(2)
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                continue
            held.append(sock)
        yield len(held)
    finally:
        for sock in held:
            sock.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descriptors(rig: Rig) -> list[Row]:
    rig.reset()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * FLOOD)), hard))
    config = rig.config("fds")
    payload = rig.up("fds", limit=LOW_LIMIT)
    broker = rig.broker()
    socket_path = str(rig.broker_files().socket)
    rows = []
    for what, family, address in (("idle connections to its socket", socket.AF_UNIX, socket_path),
                                  ("TCP connections through a tunnel's port", socket.AF_INET,
                                   ("127.0.0.1", payload["port"]))):
        with flood(family, address) as connected:
            cpu = cpu_seconds(broker)
            time.sleep(2)
            spin = cpu_seconds(broker) - cpu
            during = rig.run("status", config, timeout=60)
        logins = rig.logins()
        after = rig.run("status", config, timeout=60)
        through = rig.logins() == logins
        ok = during.code == 0 and after.code == 0 and through and rig.brokers() == [broker] and answers(
            payload["port"])
        rows.append(judged(f"descriptors: `ulimit -n {LOW_LIMIT}`, {FLOOD} {what} ({connected} connected)",
                           "serving" if ok else "NOT serving", ok, "serving",
                           note=f"status during {during.code} in {during.seconds:.1f} s, after {after.code} "
                                f"in {after.seconds:.1f} s {'through the broker' if through else 'LOGGED IN'}; "
                                f"broker CPU {spin:.2f} s in 2 s of flood"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    rig.reset()
    return rows


# ---------------------------------------------------------------- broker stopped

def stopped(rig: Rig) -> list[Row]:
    rig.reset()
    config = rig.config("stopped")
    rig.up("stopped")
    broker = rig.broker()
    os.kill(broker, signal.SIGSTOP)
    try:
        status = rig.run("status", config, timeout=120)
        connections = rig.run("connections", timeout=120)
        disconnect = rig.run("disconnect", rig.alias, timeout=120)
    finally:
        with contextlib.suppress(OSError):
            os.kill(broker, signal.SIGCONT)
    gone = wait_until(lambda: broker not in rig.brokers(), 10) is not None
    rows = [judged(f"stopped: `{o.argv[0]}` with the broker SIGSTOPped", o.seconds,
                   o.code == 0 and o.seconds < STOPPED_BOUND, f"exit 0 within {STOPPED_BOUND:g} s", "s",
                   f"exit {o.code}") for o in (status, connections, disconnect)]
    rows.append(judged("stopped: broker ended by `disconnect`", "yes" if gone else "no", gone, "yes"))
    rig.reset()
    return rows


# ---------------------------------------------------------------- SLURM requeue

def requeue(rig: Rig) -> list[Row]:
    from tests.slurm import start_cluster
    from tests.ssh_client import remote_state

    rig.reset()
    cluster = start_cluster(rig.server)  # waits for the machine lock: other clusters edit /etc/hosts too
    CLEANUP.push("SLURM cluster", cluster.close)
    try:
        key = "requeue"
        job_fields: dict[str, Any] = {"network_interface": "0.0.0.0", "scheduler": {"type": "slurm"},
                                      "watchdog_interval": 1}
        payload = rig.up(key, **job_fields)
        config = rig.config(key, **job_fields)
        first = remote_state(rig.server, key)
        assert first is not None, "the job did not start"
        job = first["job_id"]
        cluster.run(f"scontrol requeuehold {job}")  # held: it waits for us, where a plain requeue waits for a node

        def queued_again() -> bool:
            status = rig.run("status", config, "--json")
            return status.code == NOT_RUNNING and json.loads(status.stdout).get("status") == "queued"

        queued = wait_until(queued_again, 60)
        cluster.run(f"scontrol update JobId={job} ExcNodeList={first['node']}")  # its new run is elsewhere
        cluster.run(f"scontrol release {job}")
        cluster.run(f"scontrol update JobId={job} StartTime=now")  # SLURM delays a requeued job's start

        def followed() -> bool:
            state = remote_state(rig.server, key)
            record = rig.client_record(key) or {}
            return state is not None and state.get("node") != first["node"] and state.get("status") == "running" \
                and record.get("tunneled-port") == state.get("port") and answers(payload["port"])

        moved = wait_until(followed, 120)
        status = rig.run("status", config)
        rows = [
            judged("requeue: `status` while the requeued job waits", "queued, exit 3" if queued is not None
                   else "not seen", queued is not None, "queued, exit 3", note=f"after {queued or 0:.1f} s"),
            judged("requeue: the tunnel follows the job's new run (another node), same local port",
                   moved if moved is not None else "no", moved is not None and status.code == 0,
                   "yes, status exit 0", "s" if moved is not None else "",
                   f"seconds after the job's release; status then exit {status.code}"),
        ]
        rig.run("stop", config)
        return rows
    finally:
        cluster.close()


# ---------------------------------------------------------------- main

def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated, of {','.join(SCENARIOS + OPTIONAL)} (default: all but "
                             f"{','.join(OPTIONAL)})")
    parser.add_argument("--keys", type=int, default=5, help="soak: keys (default 5)")
    parser.add_argument("--mixed", type=int, default=600, help="soak: mixed commands (default 600)")
    parser.add_argument("--statuses", type=int, default=600, help="soak: status commands after the mix (default 600)")
    parser.add_argument("--workers", type=int, default=6, help="commands at a time where not said (default 6)")
    parser.add_argument("--racers", type=int, default=60, help="race: simultaneous `up` (default 60)")
    parser.add_argument("--tunnels", type=int, default=100, help="tunnels: how many (default 100)")
    parser.add_argument("--freezes", type=int, default=3, help="frozen: link outages (default 3)")
    parser.add_argument("--freeze", type=float, default=40.0, help="frozen: seconds each (default 40)")
    parser.add_argument("--kills", type=int, default=3, help="frozen: sshd sessions killed (default 3)")
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args(argv)
    asked = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = asked - set(SCENARIOS + OPTIONAL)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(SCENARIOS + OPTIONAL)}")
    args.only = [s for s in SCENARIOS + OPTIONAL if s in asked]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    CLEANUP.install_signal_handlers()
    os.chdir(ROOT)
    extra: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
                             "load_before": os.getloadavg(), "python": PYTHON}
    runs: dict[str, Callable[[Rig], list[Row]]] = {
        "soak": lambda rig: soak(rig, args.keys, args.mixed, args.statuses, args.workers, args.seed),
        "race": lambda rig: race(rig, args.racers, 3),
        "tunnels": lambda rig: tunnels(rig, args.tunnels, args.workers),
        "frozen": lambda rig: frozen(rig, args.freezes, args.freeze, args.kills),
        "killed": lambda rig: killed(rig, 5),
        "descriptors": descriptors,
        "stopped": stopped,
        "requeue": requeue,
    }
    rows: list[Row] = []
    try:
        rig = Rig.create()
        for name in args.only:
            log(f"scenario {name}")
            started = time.monotonic()
            try:
                rows += runs[name](rig)
            except Exception as exc:  # one scenario's breakage is a finding; the others still run
                rows.append(Row(f"{name}: did not complete", f"{type(exc).__name__}: {exc}"[:300], "", "", False))
            log(f"scenario {name} took {time.monotonic() - started:.0f} s")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        CLEANUP.run()
    extra["load_after"] = os.getloadavg()
    if args.json:
        print(dump_json(rows, extra))
    else:
        print(markdown(rows))
        print(f"\n{extra['started']}, {os.cpu_count()} CPUs, load average {extra['load_before'][0]:.2f} before, "
              f"{extra['load_after'][0]:.2f} after")
    return 1 if any(row.ok is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
