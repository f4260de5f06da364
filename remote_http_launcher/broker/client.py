"""The client side: find the destination's broker (or start one) and use its login through `BrokeredHost`.

A command with a live broker connects to a local socket, checks that the
broker its lock names is at the other end, and proves it knows the authkey:
no SSH, no paramiko import, no round trip to the server for the login.
Anything wrong with the broker is invisible: no broker, a stale lock or
socket, or a broker that dies starting → one is started (it logs in, asking
through this process); one that cannot be started, reached in time or trusted
(BrokerUnavailable) → we log in ourselves (`hosts.ssh.SSHHost`); a broker
that dies or loses its link mid-command → the call is repeated on a fresh
connection (a new broker, else our own).

Every wait on the broker is bounded, so a broker that is alive but stuck
(stopped, in a debugger, swapping) holds no command: the connection within
CONNECT_TIMEOUT, the key proof within protocol.HANDSHAKE_TIMEOUT, each
request within its bound (`request_timeout`), which is longer than the
broker's own host may take for that call, so a slow server is not taken for
a stuck broker. A request that gets no answer in time ends the broker's use
for the command: a call that is safe to make twice (REPEATABLE) is made on a
login of our own; any other raises HostError, since the broker may still make
it (it drops a request whose client left before the broker read it), and the
command's next call finds the broker stuck at the key proof, so logs in.
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys
import time

from .. import prompts, statefiles
from ..errors import AuthenticationError, BrokerUnavailable, HostError, LauncherError
from ..hosts.base import Host
from ..lazylog import Logger
from ..processes import own_uid, windows_same_account
from ..progress import Progress
from ..tunnels.lock import BROKER_MARKER
from .protocol import (
    ANSWER,
    CANCEL,
    KEY_BYTES,
    PROMPT,
    PROPERTIES,
    RECALL,
    NoAnswer,
    SocketEndpoint,
    Wire,
    parse_reply,
    peer,
    pipe_server,
    prove_client,
    raise_reply,
)
from .registry import BrokerFiles, BrokerLock, is_broker

TYPE_CHECKING = False  # not typing's: importing typing costs a sixth of a warm run (records.py)
if TYPE_CHECKING:
    from typing import Any

    from ..prompts import Prompt
    from .protocol import Endpoint

BUSY_WAIT = 120.0  # another command's broker may be waiting for its user to type a one-time code
BUSY_POLL = 0.05
CONNECT_TIMEOUT = 5.0  # seconds to be taken into a broker's socket (its queue is full while it is stuck)
CONNECT_POLL = 0.01
#: Seconds a request may take (beyond them the broker counts as stuck): above the longest the broker's SSH host
#: allows one call (hosts/ssh.py: a silent server is gone after the reply timeout, 15 s by default; a call may
#: make several SFTP round trips).
REQUEST_TIMEOUT = 60.0
#: A script or a launch: the SSH host's SCRIPT_TIMEOUT (120 s) after opening its channel (up to 30 s).
SCRIPT_REQUEST_TIMEOUT = 180.0
SCRIPT_METHODS = frozenset({"run_script", "launch"})
#: What a command may ask again of its own login after the broker did not answer: reads, and writes whose
#: second run leaves what the first would (not a create, rename, script, launch, signal or tunnel request).
#: Logins a command hands to a broker whose link waits for one (a second: the link was lost again meanwhile).
MAX_HANDED_LOGINS = 2
REPEATABLE = frozenset({"home", "state_dir", "read", "read_state_file", "read_status_file", RECALL, "mtime", "listdir",
                        "read_from", "process_start_time", "listens", "listening_ports",
                        "write_atomic", "remove", "info"})
log = Logger("remote_http_launcher.broker")


def request_timeout(method: str, args: tuple[Any, ...] | list[Any]) -> float:
    """How long a request to the broker may take: a channel's own timeout on top; a tunnel claim, which may
    wait for another run to start the service, is given its bound by its caller (`BrokeredHost.call_within`)."""
    if method in ("channel_send", "channel_recv"):
        return REQUEST_TIMEOUT + float(args[2])
    return SCRIPT_REQUEST_TIMEOUT if method in SCRIPT_METHODS else REQUEST_TIMEOUT



def attach(target: str, persist: float, prompt: Prompt | None, *,
           accept_new_host_key: bool = False) -> tuple[Wire, BrokerFiles]:
    """A connection to the live broker of `target`, started first when there is none."""
    files = BrokerFiles.for_target(target)
    wire = connect(files)
    if wire is not None:
        return wire, files
    lock = BrokerLock(files)
    owner = lock.read()[1]
    # A live broker without an address is logging in for another command: wait for it, else start one.
    if (owner is None or not is_broker(owner)) and start(target, persist, prompt, accept_new_host_key) == "ready":
        wire = connect(files)
        if wire is None:
            raise BrokerUnavailable("connection broker: the broker we started does not answer")
        return wire, files
    deadline = time.monotonic() + BUSY_WAIT
    while time.monotonic() < deadline:
        wire = connect(files)
        if wire is not None:
            return wire, files
        owner = lock.read()[1]
        if owner is None or not is_broker(owner):
            raise BrokerUnavailable("connection broker: the broker another command started has exited")
        time.sleep(BUSY_POLL)
    raise BrokerUnavailable(f"connection broker: another command's broker did not log in within {BUSY_WAIT:.0f} s")


def connect(files: BrokerFiles) -> Wire | None:
    """A proven connection to the broker the lock names; None when none serves (yet), after removing a lock
    its broker left behind; BrokerUnavailable when what answers is not that broker or does not prove the key.

    Nothing is sent before the lock names a live broker process of this user and the socket's other end
    is that process (Linux: SO_PEERCRED; Windows: the pipe's server process, and its account)."""
    files.check_trusted()
    lock = BrokerLock(files)
    raw, owner = lock.read()
    if owner is None:
        return None
    if not is_broker(owner):
        lock.break_if_gone(raw)  # never connect where a stale lock points: the address may be anyone's now
        return None
    address = owner.data.get("address")
    authkey = statefiles.read_bytes(files.key)
    if not isinstance(address, str) or authkey is None:
        return None
    if len(authkey) != KEY_BYTES:
        raise BrokerUnavailable(f"connection broker: its key file {files.key} is not one it wrote")
    try:
        conn = open_connection(address)
    except TimeoutError as exc:  # a live broker that takes no one in: stuck, not starting
        raise NoAnswer(f"connection broker: {exc}") from None
    except OSError as exc:
        log.debug("broker at %s does not answer: %s", address, exc)
        return None
    wire = Wire(conn)
    try:
        if sys.platform == "win32":
            server = pipe_server(conn)
            if server != owner.pid:
                raise BrokerUnavailable(f"connection broker: {address} is served by process {server}, "
                                        f"not by the broker {owner.pid}")
            if not windows_same_account(server):
                raise BrokerUnavailable(f"connection broker: {address} is served by process {server} of "
                                        "another user account")
        else:
            found, mine = peer(conn), own_uid()
            if found is not None and (found.pid != owner.pid or (mine is not None and found.uid != mine)):
                raise BrokerUnavailable(f"connection broker: {address} is served by process {found.pid} of user "
                                        f"{found.uid}, not by the broker {owner.pid}")
        prove_client(wire, authkey)
    except BrokerUnavailable:
        wire.close()
        raise
    except (OSError, EOFError) as exc:
        wire.close()
        raise BrokerUnavailable(f"connection broker: {address} failed the key proof ({exc.__class__.__name__})") \
            from None
    return wire


def open_connection(address: str) -> Endpoint:
    """A connection to the broker's socket within CONNECT_TIMEOUT (a stuck broker's queue fills up: a plain
    connect would wait there for good); OSError when none is made. Windows: its pipe client waits a bounded
    time itself, and its PipeConnection has the same methods."""
    if sys.platform == "win32":
        from multiprocessing.connection import Client

        return Client(address)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # handshake.tcp_connect says why not socket
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            try:
                sock.connect(address)
                break
            except BlockingIOError:  # the queue is full (a Unix socket says so at once)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{address}: not taken in within {CONNECT_TIMEOUT:g} s") from None
                time.sleep(CONNECT_POLL)
        sock.setblocking(True)
    except BaseException:
        sock.close()
        raise
    return SocketEndpoint(sock)


def start(target: str, persist: float, prompt: Prompt | None, accept_new_host_key: bool = False) -> str:
    """Start a broker and relay its login questions; "ready", or "busy" when another one holds the lock."""
    import subprocess  # only to start a broker, as the two below

    from ..ssh import dialahead
    from ..tunnels.daemon import converse, popen_detached

    ask = prompt or prompts.default()
    argv = [sys.executable, "-m", BROKER_MARKER, "--target", target, "--persist", repr(persist)]
    argv += ["--ask"] * (ask is not None) + ["--accept-new-host-key"] * accept_new_host_key
    argv += dialahead.dial_arguments(target)
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
    _thread.start_new_thread(proc.wait, ())  # reap it whenever it ends
    if result is None:
        raise BrokerUnavailable("connection broker: the broker ended without a result")
    if "error" in result:
        # BrokerUnavailable: the broker failed (we log in ourselves); any other: the login failed, as it would here.
        raise LauncherError.from_dict(result)
    return "busy" if result.get("busy") else "ready"


def stop_tunnel(broker: str, key: str) -> bool:
    """Ask the broker whose lock is at `broker` to end the tunnel of `key` (its other tunnels go on); False
    if it did not answer."""
    try:
        name = os.path.splitext(os.path.basename(broker))[0]  # the broker's id: its lock's path
        return request(BrokerFiles.of(name, os.path.dirname(broker)), "tunnel_drop", key) is not None
    except BrokerUnavailable:
        return False


def request(files: BrokerFiles, method: str, *args: Any) -> Any:
    """One request to the broker of `files` on a connection of its own: its value, or None when there is
    no broker, or it did not answer the request in time or failed (BrokerUnavailable when what answered is
    not it, or is stuck: it took no connection or key proof in time)."""
    wire = connect(files)
    if wire is None:
        return None
    try:
        wire.send([method, list(args), {}])
        kind, fields = parse_reply(wire.receive(timeout=request_timeout(method, args)))
        return fields[0] if kind == "ok" else None
    except (OSError, EOFError, BrokerUnavailable):
        return None
    finally:
        wire.close()


class Relayed:
    """A `Host` method or property of BrokeredHost (one of protocol.RELAYED): a call to the broker."""

    name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, host: BrokeredHost | None, owner: type | None = None) -> Any:
        if host is None:
            return self
        if self.name in PROPERTIES:
            return host.call(self.name)
        name = self.name
        return lambda *args, **kwargs: host.call(name, *args, **kwargs)


class BrokeredHost(Host):
    """The `Host` interface, each call made by the broker on its SSH connection.

    Each thread of ours gets a connection of its own (the launcher checks
    the process and the port at the same time); the broker serves each on a
    thread. Once the broker failed us, every call goes to `fallback`.
    """

    poll_interval = 0.2  # as hosts.ssh.SSHHost's (importing that module would load paramiko)
    # protocol.RELAYED, relayed as they are (tests/test_broker_wire.py checks that these are all of them)
    home = Relayed()
    state_dir = Relayed()
    read = Relayed()
    read_state_file = Relayed()
    read_status_file = Relayed()
    mtime = Relayed()
    write_atomic = Relayed()
    create_exclusive = Relayed()
    create_then_read = Relayed()
    rename = Relayed()
    remove = Relayed()
    listdir = Relayed()
    read_from = Relayed()
    process_start_time = Relayed()
    run_script = Relayed()
    listens = Relayed()
    listening_ports = Relayed()
    signal_group = Relayed()
    launch = Relayed()

    def __init__(self, target: str, persist: float, prompt: Prompt | None,
                 attached: tuple[Wire, BrokerFiles], *, retry_broker: bool = True) -> None:
        self.name = target
        self.retry_broker = retry_broker
        self.persist = persist
        self.prompt = prompt
        self.files = attached[1]
        self.fallback: Host | None = None
        self.failed_over: LauncherError | None = None  # why the fail-over failed: later calls raise it at once
        # threading.local and threading.Lock are these; importing threading costs a reconnect ~1 ms
        self._local = _thread._local()
        self._local.wire = attached[0]
        self._all = [attached[0]]
        self._lock = _thread.allocate_lock()
        self._login = _thread.allocate_lock()  # one thread asks the user for the broker's login; the others wait
        self._logins = 0  # logins handed to the broker by this command

    # ---- the calls ----
    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` on the broker's host; repeated on a fresh connection when the broker fails."""
        return self.call_within(request_timeout(method, args), method, *args, **kwargs)

    def call_within(self, timeout: float, method: str, *args: Any, **kwargs: Any) -> Any:
        """`call`, answered within `timeout` seconds, else the broker is not used again by this command (see
        the module's doc)."""
        if self.fallback is None:
            sent = False
            logins = self._logins
            try:
                wire = self._wire()
                wire.send([method, list(args), kwargs])
                sent = True
                kind, fields = parse_reply(wire.receive(timeout=timeout))
            except NoAnswer as exc:
                if sent and method not in REPEATABLE and not method.startswith("tunnel_"):
                    with self._lock:
                        self._close_connections()  # a late reply must not be taken for the next one's
                    raise HostError(f"{self.name}: the connection broker did not answer {method} within "
                                    f"{timeout:g} s and may still make it; see 'status', then run the command "
                                    "again (it logs in itself while the broker is stuck; 'disconnect' ends it)",
                                    host=self.name, step=method) from None
                self._fail_over(f"the broker is stuck ({exc})", direct=True)
            except (OSError, EOFError, BrokerUnavailable) as exc:
                self._fail_over(f"the broker is gone ({exc})")
            except BaseException:  # Ctrl-C mid-call: its reply, still to come, must not pass for the next call's
                self._drop_wire()
                raise
            else:
                if kind == "ok":
                    return fields[0]
                if kind == "login":
                    try:
                        self._hand_login(wire, fields[0], logins)
                    except (OSError, EOFError, BrokerUnavailable) as exc:
                        self._fail_over(f"the broker is gone ({exc})")
                    else:
                        return self.call_within(timeout, method, *args, **kwargs)
                elif kind == "unavailable":
                    self._fail_over(f"the broker cannot make this call ({fields[0]})", direct=True)
                elif kind == "error" and fields[1]:
                    self._fail_over("the broker's link is lost", LauncherError.from_dict(fields[0]))
                else:
                    raise_reply(kind, fields)
        assert self.fallback is not None
        if method.startswith("channel_"):
            raise ConnectionResetError("the broker that held this channel is gone")
        if method.startswith("tunnel_"):
            raise BrokerUnavailable("connection broker: the broker that kept the tunnel is gone")
        found = getattr(self.fallback, method)
        return found if method in PROPERTIES else found(*args, **kwargs)

    def _hand_login(self, wire: Wire, why: str, seen: int) -> None:
        """The broker's link waits for a login only our user can answer (a password, a one-time code): ask
        for it where questions go, relaying each question of the broker's login, once per command (`seen`:
        the logins handed when our call was sent; a thread that finds one handed since just calls again).
        The broker restores every tunnel of the host with it."""
        with self._login:
            if self._logins != seen:
                return
            prompt = self.prompt or prompts.default()
            if prompt is None or self._logins >= MAX_HANDED_LOGINS:
                raise AuthenticationError(f"{self.name}: {why} (a password or one-time code), and there is no "
                                          "way to ask here; run a command for this host in a terminal, or pass "
                                          "prompt= to run()", host=self.name, step="login")
            self._logins += 1
            log.info("%s: %s; logging in for it", self.name, why)
            wire.send(["login", [], {}])
            while True:
                message = wire.receive(timeout=SCRIPT_REQUEST_TIMEOUT)
                if isinstance(message, list) and len(message) == 3 and message[0] == PROMPT:
                    try:
                        reply = [ANSWER, prompt(str(message[1]), bool(message[2]))]
                    except Exception as exc:  # no answer: the broker's login gives that step up
                        reply = [CANCEL, str(exc) or type(exc).__name__]
                    wire.send(reply)
                    continue
                kind, fields = parse_reply(message)
                if kind in ("error", "oserror"):
                    raise_reply(kind, fields)
                if kind != "ok":
                    raise BrokerUnavailable(f"connection broker: {fields[0]}")
                return

    def _wire(self) -> Wire:
        wire: Wire | None = getattr(self._local, "wire", None)
        if wire is None:
            wire = connect(self.files)
            if wire is None:
                raise ConnectionRefusedError("no broker")
            self._local.wire = wire
            with self._lock:
                self._all.append(wire)
        return wire

    def _drop_wire(self) -> None:
        """Close this thread's connection to the broker; its next call opens another."""
        wire: Wire | None = getattr(self._local, "wire", None)
        self._local.wire = None
        if wire is not None:
            with self._lock:
                if wire in self._all:
                    self._all.remove(wire)
            wire.close()

    def _fail_over(self, why: str, error: LauncherError | None = None, *, direct: bool = False) -> None:
        """Continue on a new broker (ours died), or logged in here: after the broker's link was lost, when
        the broker cannot make a call (`direct`), and when a broker started for this command fails too
        (never a chain of brokers). With `error` (what the lost link raised), a login here that fails
        raises that instead: it says what went wrong."""
        with self._lock:
            if self.fallback is not None:
                return
            if self.failed_over is not None:  # a server out of reach for one call is for the next: no new login
                raise self.failed_over
            log.info("%s: %s; connecting again", self.name, why)
            self._close_connections()
            if error is None and self.retry_broker and not direct:
                try:
                    self.fallback = BrokeredHost(self.name, self.persist, self.prompt,
                                                 attach(self.name, self.persist, self.prompt), retry_broker=False)
                    return
                except BrokerUnavailable:
                    pass
            from ..hosts.ssh import SSHHost

            try:
                self.fallback = SSHHost.connect(self.name, prompt=self.prompt)
            except LauncherError as exc:
                self.failed_over = exc if error is None else error
                raise self.failed_over from None

    def tcp_channel(self, host: str, port: int, timeout: float) -> Any:
        if self.fallback is not None:
            return self.fallback.tcp_channel(host, port, timeout)
        number = self.call("tcp_channel", host, port, timeout)
        if self.fallback is not None:  # the broker failed during the call: the channel is the fallback's
            return number
        return RelayedChannel(self, number, timeout)

    def info(self) -> dict[str, Any]:
        return dict(self.call("info"))

    def recall_status_file(self, name: str) -> bytes | None:
        found = self.call(RECALL, name)
        return found if isinstance(found, bytes) else None

    def close(self) -> None:
        with self._lock:
            self._close_connections()
        if self.fallback is not None:
            self.fallback.close()

    def _close_connections(self) -> None:
        for wire in self._all:
            wire.close()
        self._all = []
        self._local = _thread._local()


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
        return bytes(self.host.call("channel_recv", self.number, size, self.timeout))

    def close(self) -> None:
        if self.host.fallback is None:
            self.host.call("channel_close", self.number)
