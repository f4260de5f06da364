"""Where an SSH run spends its round trips: the launcher in-process, each host operation timed and counted.

Wraps the SSH layer (TCP connect, key exchange, auth, SFTP session, each
host operation, direct-tcpip, handshakes, poll sleeps) and charges every
step the round trips the delaying proxy saw while it ran (exclusive of the
steps nested in it). Imports are already done in-process, so the total is
the protocol's share of a run; compare it with the whole-process time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ssh_bench import Link, SSHSetup


class Tracer:
    def __init__(self, ssh: Callable[[], int], http: Callable[[], int]) -> None:
        self.ssh, self.http = ssh, http
        self.main = threading.get_ident()
        self.stack: list[list[float]] = []
        self.stats: dict[str, list[float]] = {}  # name -> calls, ssh rts, http rts, seconds (exclusive)
        self.order: list[str] = []
        self.undo: list[Callable[[], None]] = []
        self.lock = threading.Lock()

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        if not (attr in owner.__dict__ if isinstance(owner, type) else hasattr(owner, attr)):
            return  # the code changed under us: trace what exists
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        kind = type(original) if isinstance(original, (classmethod, staticmethod)) else None
        function = original.__func__ if kind else original
        tracer = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != tracer.main:
                with tracer.parallel(f"{name} [other thread]"):
                    return function(*args, **kwargs)
            with tracer.step(name):
                return function(*args, **kwargs)

        setattr(owner, attr, kind(wrapper) if kind else wrapper)
        self.undo.append(lambda: setattr(owner, attr, original))

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        frame = [time.perf_counter(), self.ssh(), self.http(), 0.0, 0.0, 0.0]
        self.stack.append(frame)
        try:
            yield
        finally:
            self.stack.pop()
            incl = [time.perf_counter() - frame[0], self.ssh() - frame[1], self.http() - frame[2]]
            excl = [incl[0] - frame[3], incl[1] - frame[4], incl[2] - frame[5]]
            if name not in self.stats:
                self.stats[name] = [0, 0, 0, 0.0]
                self.order.append(name)
            entry = self.stats[name]
            entry[0] += 1
            entry[1] += excl[1]
            entry[2] += excl[2]
            entry[3] += excl[0]
            if self.stack:
                parent = self.stack[-1]
                parent[3] += incl[0]
                parent[4] += incl[1]
                parent[5] += incl[2]

    @contextmanager
    def parallel(self, name: str) -> Iterator[None]:
        """A step on another thread: its time only (its round trips land in the main thread's step)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self.lock:
                if name not in self.stats:
                    self.stats[name] = [0, 0, 0, 0.0]
                    self.order.append(name)
                self.stats[name][0] += 1
                self.stats[name][3] += time.perf_counter() - start

    def replace(self, owner: Any, attr: str, value: Any) -> None:
        original = getattr(owner, attr)
        setattr(owner, attr, value)
        self.undo.append(lambda: setattr(owner, attr, original))

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


def instrument(tracer: Tracer) -> None:
    from remote_http_launcher import handshake, launcher
    from remote_http_launcher.hosts import ssh
    from remote_http_launcher.ssh import auth, connection, hostkeys, sftp
    from remote_http_launcher.ssh._paramiko import paramiko

    wrap = tracer.wrap
    wrap(connection, "load_ssh_config", "read ~/.ssh/config (local)")  # the name connect() calls
    wrap(connection, "_tcp", "TCP connect")
    wrap(connection, "_start_transport", "SSH banner + key exchange")
    wrap(hostkeys.KnownHosts, "load", "known_hosts (local)")
    wrap(auth.Authenticator, "run", "user auth (publickey)")
    wrap(paramiko.Transport, "open_sftp_client", "SFTP session start (channel, subsystem, init)")
    wrap(sftp.PipelinedSFTP, "start", "SFTP session start (channel; subsystem and init unawaited)")
    wrap(paramiko.SFTPClient, "normalize", "home directory (SFTP realpath)")
    wrap(ssh.SSHHost, "read", "read file (SFTP open + read)")
    wrap(ssh.SSHHost, "read_state_file", "read state file (first: open with the home look-up)")
    wrap(ssh.SSHHost, "_our_uid", "stat /proc/self (once)")
    wrap(ssh.SSHHost, "_load_identity", "home directory + /proc/self owner")
    wrap(ssh.SSHHost, "process_start_time", "process check (/proc/PID/stat)")
    wrap(ssh.SSHHost, "run_script", "exec (session channel, exec, output, exit)")
    wrap(ssh.SSHHost, "create_exclusive", "create file (lock)")
    wrap(ssh.SSHHost, "create_then_read", "create lock + open status file (write and open in one flight)")
    wrap(ssh.SSHHost, "remove", "remove file")
    wrap(ssh.SSHHost, "rename", "rename file")
    wrap(ssh.SSHHost, "mtime", "stat file")
    wrap(connection.SSHConnection, "forward", "direct-tcpip channel open")
    wrap(ssh.SSHHost, "close", "close connection")
    wrap(handshake, "check", "HTTP handshake (request/response)")
    real_sleep = time.sleep

    class Clock:  # launcher's own `time` module reference: only its poll sleeps are traced
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            with tracer.step("poll sleep"):
                real_sleep(seconds)

    tracer.replace(launcher, "time", Clock())


def render(title: str, tracer: Tracer, total: float, ssh_total: int, http_total: int) -> tuple[str, dict[str, Any]]:
    lines = [f"#### {title}: {total:.3f} s in-process, {ssh_total} SSH + {http_total} HTTP round trips",
             "| step | calls | SSH RTs | HTTP RTs | time |", "|---|---|---|---|---|"]
    accounted = 0.0
    data = []
    for name in tracer.order:
        calls, ssh, http, seconds = tracer.stats[name]
        accounted += 0 if name.endswith("[other thread]") else seconds
        lines.append(f"| {name} | {calls:g} | {ssh:g} | {http:g} | {seconds:.3f} s |")
        data.append({"step": name, "calls": calls, "ssh_rt": ssh, "http_rt": http, "seconds": seconds})
    lines.append(f"| (untraced local work) |  |  |  | {total - accounted:.3f} s |")
    lines.append("\n[other thread] steps overlap the main thread's; their round trips are counted there.")
    return "\n".join(lines), {"title": title, "total": total, "steps": data}


def profile(setup: SSHSetup, link: Link) -> tuple[str, dict[str, Any]]:
    """Reconnect and cold launch (tunnel: false) on `link`, in this process."""
    from .common import launcher_argv, timed_run

    saved = {k: os.environ.get(k) for k in ("HOME", "REMOTE_HTTP_LAUNCHER_DIR", "SSH_AUTH_SOCK")}
    config = setup.config(link, tunnel=False)
    texts, data = [], []
    try:
        os.environ.update(HOME=str(setup.client_home), REMOTE_HTTP_LAUNCHER_DIR=str(setup.state_dir))
        os.environ.pop("SSH_AUTH_SOCK", None)
        from remote_http_launcher import api

        for scenario in ("reconnect", "cold launch"):
            setup.forget_client(config)
            if scenario == "reconnect":
                timed_run(launcher_argv(config), setup.env())  # make sure it runs
                setup.forget_client(config)
            else:
                setup.clean_remote(keep_state_dir=True)
            link.ssh_proxy.reset()
            if link.http_proxy:
                link.http_proxy.reset()
            tracer = Tracer(link.ssh_proxy.counters.round_trips,
                            lambda: link.http_proxy.counters.round_trips() if link.http_proxy else 0)
            instrument(tracer)
            try:
                start = time.perf_counter()
                api.run(str(config))
                total = time.perf_counter() - start
            finally:
                tracer.restore()
            time.sleep(0.1)
            text, record = render(f"{scenario}, tunnel: false, {link.label}", tracer, total,
                                  link.ssh_proxy.counters.round_trips(),
                                  link.http_proxy.counters.round_trips() if link.http_proxy else 0)
            texts.append(text)
            data.append(record)
        setup.forget_client(config)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return "\n\n".join(texts), {"scenarios": data}
