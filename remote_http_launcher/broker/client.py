"""The client side: find the destination's broker (or start one) and use its login through `BrokeredHost`.

A command with a live broker connects to a local socket and proves it knows
the authkey: no SSH, no paramiko import, no round trip to the server for the
login. Anything wrong with the broker is invisible: no broker, a stale socket
or a broker that dies starting → one is started (it logs in, asking through
this process); one that cannot be started or reached → we log in ourselves
(`hosts.ssh.SSHHost`); a broker that dies or loses its link mid-command →
the call is repeated on a fresh connection (a new broker, else our own).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any, cast

from .. import prompts, statefiles
from ..errors import LauncherError
from ..hosts.base import Host, Launch, ScriptResult, SeenProcess
from ..progress import Progress
from ..prompts import Prompt
from ..tunnels.lock import BROKER_MARKER
from .protocol import PROPERTIES, raise_reply
from .registry import STEP, BrokerFiles, BrokerLock, is_broker

BUSY_WAIT = 120.0  # another command's broker may be waiting for its user to type a one-time code
BUSY_POLL = 0.05
log = logging.getLogger("remote_http_launcher.broker")


def unavailable(why: str) -> LauncherError:
    """No broker can serve this command (it then logs in itself): why, as an error of our step."""
    return LauncherError(f"connection broker: {why}", step=STEP)


def attach(target: str, persist: float, prompt: Prompt | None, *,
           accept_new_host_key: bool = False) -> tuple[Connection, BrokerFiles]:
    """A connection to the live broker of `target`, started first when there is none."""
    files = BrokerFiles.for_target(target)
    conn = connect(files)
    if conn is not None:
        return conn, files
    lock = BrokerLock(files)
    owner = lock.read()[1]
    # A live broker without an address is logging in for another command: wait for it, else start one.
    if (owner is None or not is_broker(owner)) and start(target, persist, prompt, accept_new_host_key) == "ready":
        conn = connect(files)
        if conn is None:
            raise unavailable("the broker we started does not answer")
        return conn, files
    deadline = time.monotonic() + BUSY_WAIT
    while time.monotonic() < deadline:
        conn = connect(files)
        if conn is not None:
            return conn, files
        owner = lock.read()[1]
        if owner is None or not is_broker(owner):
            raise unavailable("the broker another command started has exited")
        time.sleep(BUSY_POLL)
    raise unavailable(f"another command's broker did not log in within {BUSY_WAIT:.0f} s")


def connect(files: BrokerFiles) -> Connection | None:
    """A connection to the broker the lock names, or None (none serves yet, or it is gone)."""
    files.check_trusted()
    owner = BrokerLock(files).read()[1]
    address = owner.data.get("address") if owner is not None else None
    authkey = statefiles.read_bytes(files.key)
    if not isinstance(address, str) or authkey is None:
        return None
    try:  # a PipeConnection on Windows, with the same methods
        return cast(Connection, Client(address, authkey=authkey))  # type: ignore[redundant-cast, unused-ignore]
    except (OSError, EOFError, AuthenticationError) as exc:
        log.debug("broker at %s does not answer: %s", address, exc)
        return None


def start(target: str, persist: float, prompt: Prompt | None, accept_new_host_key: bool = False) -> str:
    """Start a broker and relay its login questions; "ready", or "busy" when another one holds the lock."""
    from ..tunnels.daemon import converse, popen_detached  # only to start a broker

    ask = prompt or prompts.default()
    argv = [sys.executable, "-m", BROKER_MARKER, "--target", target, "--persist", repr(persist)]
    argv += ["--ask"] * (ask is not None) + ["--accept-new-host-key"] * accept_new_host_key
    proc = popen_detached(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        result = converse(proc, Progress.silent(), ask)
    except BaseException:  # Ctrl-C during the login: the broker must not stay behind, half logged in
        proc.kill()
        raise
    finally:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it whenever it ends
    if result is None:
        raise unavailable("the broker ended without a result")
    if "error" in result:
        # Our step: the broker failed (we log in ourselves); any other: the login failed, as it would here.
        raise LauncherError.from_dict(result)
    return "busy" if result.get("busy") else "ready"


def stop_tunnel(broker: str, key: str) -> bool:
    """Ask the broker whose lock is at `broker` to end the tunnel of `key` (its other tunnels go on); False
    if it did not answer."""
    conn = connect(BrokerFiles.of(Path(broker).stem, Path(broker).parent))
    if conn is None:
        return False
    try:
        conn.send(("tunnel_drop", (key,)))
        return bool(conn.recv()[0] == "ok")
    except (OSError, EOFError):
        return False
    finally:
        conn.close()


class BrokeredHost(Host):
    """The `Host` interface, each call made by the broker on its SSH connection.

    Each thread of ours gets a connection of its own (the launcher checks
    the process and the port at the same time); the broker serves each on a
    thread. Once the broker failed us, every call goes to `fallback`.
    """

    poll_interval = 0.2  # as hosts.ssh.SSHHost's (importing that module would load paramiko)

    def __init__(self, target: str, persist: float, prompt: Prompt | None,
                 attached: tuple[Connection, BrokerFiles], *, retry_broker: bool = True) -> None:
        self.name = target
        self.retry_broker = retry_broker
        self.persist = persist
        self.prompt = prompt
        self.files = attached[1]
        self.fallback: Host | None = None
        self._local = threading.local()
        self._local.conn = attached[0]
        self._all = [attached[0]]
        self._lock = threading.Lock()

    # ---- the calls ----
    def call(self, method: str, *args: Any) -> Any:
        """`method(*args)` on the broker's host; repeated on a fresh connection when the broker fails."""
        if self.fallback is None:
            try:
                conn = self._conn()
                conn.send((method, args))
                reply = conn.recv()
            except (OSError, EOFError, AuthenticationError) as exc:
                self._fail_over(f"the broker is gone ({exc.__class__.__name__})")
            else:
                if reply[0] == "ok":
                    return reply[1]
                if reply[0] != "error" or not reply[2]:
                    raise_reply(reply)
                self._fail_over("the broker's link is lost", LauncherError.from_dict(reply[1]))
        assert self.fallback is not None
        if method.startswith("channel_"):
            raise ConnectionResetError("the broker that held this channel is gone")
        if method.startswith("tunnel_"):
            raise unavailable("the broker that kept the tunnel is gone")
        found = getattr(self.fallback, method)
        return found if method in PROPERTIES else found(*args)

    def _conn(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.files)
            if conn is None:
                raise ConnectionRefusedError("no broker")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _fail_over(self, why: str, error: LauncherError | None = None) -> None:
        """Continue on a new broker (ours died), or logged in here: after the broker's link was lost, and
        when a broker started for this command fails too (never a chain of brokers). With `error` (what
        the lost link raised), a login here that fails raises that instead: it says what went wrong."""
        with self._lock:
            if self.fallback is not None:
                return
            log.info("%s: %s; connecting again", self.name, why)
            self._close_connections()
            if error is None and self.retry_broker:
                try:
                    self.fallback = BrokeredHost(self.name, self.persist, self.prompt,
                                                 attach(self.name, self.persist, self.prompt), retry_broker=False)
                    return
                except LauncherError as exc:
                    if exc.step != STEP:
                        raise
            from ..hosts.ssh import SSHHost

            try:
                self.fallback = SSHHost.connect(self.name, prompt=self.prompt)
            except LauncherError:
                if error is None:
                    raise
                raise error from None

    @property
    def home(self) -> str:
        return str(self.call("home"))

    @property
    def state_dir(self) -> str:
        return str(self.call("state_dir"))

    def read(self, path: str) -> bytes | None:
        return self.call("read", path)  # type: ignore[no-any-return]

    def read_state_file(self, name: str) -> bytes | None:
        return self.call("read_state_file", name)  # type: ignore[no-any-return]

    def read_status_file(self, name: str) -> tuple[bytes | None, SeenProcess | None]:
        raw, seen = self.call("read_status_file", name)
        return raw, SeenProcess(*seen) if seen is not None else None

    def mtime(self, path: str) -> float | None:
        return self.call("mtime", path)  # type: ignore[no-any-return]

    def write_atomic(self, path: str, data: bytes) -> None:
        self.call("write_atomic", path, data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        return bool(self.call("create_exclusive", path, data))

    def create_then_read(self, path: str, data: bytes, other: str) -> tuple[bool, bytes | None]:
        return self.call("create_then_read", path, data, other)  # type: ignore[no-any-return]

    def rename(self, source: str, target: str) -> bool:
        return bool(self.call("rename", source, target))

    def remove(self, path: str) -> None:
        self.call("remove", path)

    def listdir(self, path: str) -> list[str]:
        return self.call("listdir", path)  # type: ignore[no-any-return]

    def run_script(self, script: str, args: list[str], stdin: bytes = b"") -> ScriptResult:
        return ScriptResult(*self.call("run_script", script, args, stdin))

    def process_start_time(self, pid: int) -> str | None:
        return self.call("process_start_time", pid)  # type: ignore[no-any-return]

    def signal_group(self, pid: int, signal: str) -> bool:
        return bool(self.call("signal_group", pid, signal))

    def listens(self, pid: int, port: int) -> bool | None:
        return self.call("listens", pid, port)  # type: ignore[no-any-return]

    def launch(self, request: Launch) -> ScriptResult:
        return ScriptResult(*self.call("launch", request))

    def read_from(self, path: str, offset: int) -> tuple[bytes, int] | None:
        return self.call("read_from", path, offset)  # type: ignore[no-any-return]

    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        if self.fallback is not None:
            return self.fallback.tcp_channel(host, port, timeout)
        number = self.call("tcp_channel", host, port, timeout)
        if self.fallback is not None:  # the broker failed during the call: the channel is the fallback's
            return number
        return RelayedChannel(self, number, timeout)

    def info(self) -> dict[str, Any]:
        return self.call("info")  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            self._close_connections()
        if self.fallback is not None:
            self.fallback.close()

    def _close_connections(self) -> None:
        for conn in self._all:
            conn.close()
        self._all = []
        self._local = threading.local()


class RelayedChannel:
    """The socket-like channel the broker opened (`Host.tcp_channel`), each call relayed to it."""

    def __init__(self, host: BrokeredHost, number: int, timeout: float) -> None:
        self.host = host
        self.number = number
        self.timeout = timeout

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def sendall(self, data: bytes) -> None:
        self.host.call("channel_send", self.number, data, self.timeout)

    def recv(self, size: int) -> bytes:
        return self.host.call("channel_recv", self.number, size, self.timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.host.fallback is None:
            self.host.call("channel_close", self.number)
