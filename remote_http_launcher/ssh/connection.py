"""One authenticated, host-key-verified paramiko Transport, set up the way OpenSSH would.

We never run the `ssh` binary: the byte stream (TCP, ProxyCommand or a
ProxyJump chain), the key exchange, the host-key check (hostkeys.py) and the
login (auth.py) are ours on a bare `paramiko.Transport`, so their order, the
policy and every error message are ours: each failure is one line naming the
host and the step.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .. import prompts
from ..errors import HostError
from ..prompts import Prompt
from . import dialahead
from ._paramiko import paramiko
from .auth import Authenticator
from .ciphers import offered
from .config import Endpoint, load_ssh_config, misspelt_alias, parse_hop, resolve
from .hostkeys import ACCEPT_NEW, KnownHosts, check_host_key
from .proxy import CommandSocket

MIN_HANDSHAKE_TIMEOUT = 15.0
MAX_PROXY_DEPTH = 8
CHANNEL_ORIGIN = ("127.0.0.1", 0)
PROBE_INTERVAL = 0.25  # seconds between alive checks while a script runs (SSHConnection.probing)
ALIVE_REQUEST = "keepalive@openssh.com"  # what OpenSSH sends; a server answers any global request it is asked to

#: What a Transport runs over: a TCP socket, a ProxyCommand's pipes, or a jump host's channel.
Stream: TypeAlias = socket.socket | CommandSocket | paramiko.Channel


@dataclass(eq=False)
class SSHConnection:
    """A live SSH connection: the target's Transport plus the jump hosts it runs through."""

    endpoint: Endpoint
    transport: paramiko.Transport
    hops: list[SSHConnection] = field(default_factory=list)
    #: Why the connection was closed under us (e.g. "no answer within 15 s"), for error messages.
    lost: str | None = None
    _closed: threading.Event = field(default_factory=threading.Event, repr=False)
    _wake: threading.Event = field(default_factory=threading.Event, repr=False)  # set by close() and probing()
    _probing: int = 0  # scripts running (`probing`), counted under _probing_lock
    _probing_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        threading.Thread(target=self._check_alive, name=f"rhl-alive-{self.endpoint.alias}", daemon=True).start()

    def _check_alive(self) -> None:
        """OpenSSH's ServerAliveInterval/CountMax: every interval, a request the server must answer; no
        answer within the reply timeout closes the connection. So every wait on this connection (a long
        script, an SFTP reply, a tunnel) ends within that bound when the link goes silent, whatever its own
        timeout; paramiko's keep-alives ask for no answer, so they cannot tell. While a script runs
        (`probing`), every PROBE_INTERVAL. One thread sends them all: paramiko keeps one pending answer."""
        while True:
            self._wake.wait(min(PROBE_INTERVAL, self.endpoint.alive_interval) if self._probing
                            else self.endpoint.alive_interval)
            self._wake.clear()
            if self._closed.is_set() or not self.transport.is_active():
                return
            with self.answer_within():
                # Returns on the answer or the close. paramiko shares its completion event with a key
                # re-exchange we would start ourselves (we never do) and other global requests (we send none).
                self.transport.global_request(ALIVE_REQUEST, wait=True)

    @contextmanager
    def probing(self) -> Iterator[None]:
        """While the block waits for a script, which may run for minutes without a word: the server is asked
        at once and then every PROBE_INTERVAL, so a link lost meanwhile is noticed within the reply timeout,
        as an SFTP request's would be, not only at the next alive interval."""
        with self._probing_lock:
            self._probing += 1
        self._wake.set()
        try:
            yield
        finally:
            with self._probing_lock:
                self._probing -= 1

    @property
    def label(self) -> str:
        return self.endpoint.label

    @contextmanager
    def answer_within(self, seconds: float | None = None) -> Iterator[None]:
        """Close the connection if the block is still waiting after `seconds` (default: the reply timeout).

        For the waits paramiko makes without any limit (opening a session,
        starting a subsystem or a command): a link that dies silently raises
        nothing for many minutes (TCP keeps retransmitting). Closing the
        transport wakes every waiter with an error, and `lost` says why.
        """
        limit = self.endpoint.reply_timeout if seconds is None else seconds
        timer = threading.Timer(limit, self.give_up, (f"no answer within {limit:g} s",))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def give_up(self, reason: str) -> None:
        """Close a connection whose server stopped answering; later steps fail at once, naming `reason`."""
        if self.transport.is_active():
            self.lost = reason
            self.close()

    def fail(self, step: str, detail: str, kind: type[HostError] = HostError) -> HostError:
        return self.endpoint.fail(step, detail, kind)

    def forward(self, host: str, port: int, timeout: float) -> paramiko.Channel:
        """A `direct-tcpip` channel to host:port as seen from the server, usable as a socket.

        A refused or unreachable port raises ConnectionRefusedError and a slow
        one TimeoutError (both OSError, i.e. 'not answering'); a server that
        forbids forwarding or a dead connection raise HostError.
        """
        try:
            channel = self.transport.open_channel("direct-tcpip", (host, port), CHANNEL_ORIGIN, timeout=timeout)
        except paramiko.ChannelException as exc:
            if exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                raise self.fail("port forwarding", f"the server refuses TCP forwarding to {host}:{port} "
                                "(AllowTcpForwarding in its sshd_config)") from None
            raise ConnectionRefusedError(f"{host}:{port} via {self.label}: {exc.text}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not self.transport.is_active():
                raise self.fail("port forwarding", "connection lost") from None
            raise TimeoutError(f"{host}:{port} via {self.label}: {exc}") from None
        channel.settimeout(timeout)
        return channel

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self.transport.close()
        for hop in reversed(self.hops):
            hop.close()


def connect(target: str, *, interactive: bool = True, prompt: Prompt | None = None,
            accept_new_host_key: bool = False) -> SSHConnection:
    """Connect to `target` ([user@]host or a ~/.ssh/config alias), verify it and log in.

    Questions (unknown host keys, passphrases, passwords, one-time codes) go
    to `prompt`, or without it to the terminal or the Jupyter cell the call
    came from (prompts.default), and are asked on this thread. With
    `interactive=False`, or nowhere to ask, those steps are skipped and a
    failure says how to answer them. `accept_new_host_key` records an
    unknown host key without asking (StrictHostKeyChecking accept-new, as `ssh -o` would set it);
    a changed key is refused all the same.
    """
    ask = (prompt or prompts.default()) if interactive else None
    sources: list[str] = []
    config = load_ssh_config([ACCEPT_NEW] if accept_new_host_key else [], sources)
    user, _, host = target.rpartition("@")
    endpoint = resolve(config, host, user or None)
    connection = prompts.answered_here(lambda relay: _connect(endpoint, config, relay, depth=0), ask)
    if sources and isinstance(connection.transport.sock, socket.socket):  # plain TCP: the next keeper's head start
        dialahead.remember(target, (endpoint.hostname, endpoint.port), sources)
    return connection


def _connect(endpoint: Endpoint, config: paramiko.SSHConfig, ask: Prompt | None, depth: int,
             via: SSHConnection | None = None) -> SSHConnection:
    """Open the stream (directly, or through `via`), exchange keys, check the host key, log in."""
    if depth > MAX_PROXY_DEPTH:
        raise endpoint.fail("ProxyJump", f"more than {MAX_PROXY_DEPTH} nested jump hosts (a loop? add "
                            "'ProxyJump none' to the jump host's entry in ~/.ssh/config)")
    hops: list[SSHConnection] = []
    transport = None
    step = "connect"
    try:
        sock = _channel_to(via, endpoint) if via else _open_stream(endpoint, config, ask, depth, hops)
        known = KnownHosts.load(endpoint)
        step = "key exchange"
        transport = _start_transport(endpoint, sock, known)
        step = "host key"
        check_host_key(endpoint, transport.get_remote_server_key(), known, ask)
        step = "auth"
        Authenticator(endpoint, transport, ask).run()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        # Whatever paramiko raised where we did not expect it (e.g. a link that died between two steps):
        # still one line naming the host and the step.
        _close(transport, hops)
        lost = "connection lost" if transport is not None and not transport.is_active() else ""
        raise endpoint.fail(step, lost or str(exc) or exc.__class__.__name__) from None
    except BaseException:
        _close(transport, hops)
        raise
    return SSHConnection(endpoint, transport, hops)


def _close(transport: paramiko.Transport | None, hops: list[SSHConnection]) -> None:
    if transport is not None:
        transport.close()
    for hop in reversed(hops):
        hop.close()


# ---- the byte stream: TCP, ProxyCommand or ProxyJump ----

def _open_stream(endpoint: Endpoint, config: paramiko.SSHConfig, ask: Prompt | None, depth: int,
                 hops: list[SSHConnection]) -> Stream:
    """ProxyJump wins over ProxyCommand (OpenSSH takes whichever the file sets first; paramiko can't tell)."""
    jump = endpoint.option("proxyjump")
    command = endpoint.option("proxycommand")
    if jump and jump.lower() != "none":
        dialahead.discard()
        return _via_jump_hosts(endpoint, jump, config, ask, depth, hops)
    if command and command.lower() != "none":
        dialahead.discard()
        return _proxy_command(endpoint, command)
    return _tcp(endpoint, config)


def _tcp(endpoint: Endpoint, config: paramiko.SSHConfig) -> socket.socket:
    timeout = endpoint.connect_timeout
    try:
        sock = dialahead.take((endpoint.hostname, endpoint.port), timeout) \
            or socket.create_connection((endpoint.hostname, endpoint.port), timeout=timeout)
    except socket.gaierror as exc:
        raise endpoint.fail("connect", f"cannot resolve host name {endpoint.hostname!r} ({exc.strerror})"
                                       f"{misspelt_alias(config, endpoint)}") from None
    except TimeoutError:
        raise endpoint.fail("connect", f"timed out after {timeout:g} s") from None
    except OSError as exc:
        raise endpoint.fail("connect", (exc.strerror or str(exc)).lower()) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SSH packets are small; don't let Nagle delay them
    return sock


def _proxy_command(endpoint: Endpoint, command: str) -> CommandSocket:
    """Run ProxyCommand as OpenSSH does (ssh/proxy.py); its stdin and stdout are the connection."""
    try:
        proxy = CommandSocket(command)
    except OSError as exc:
        raise endpoint.fail("ProxyCommand", f"cannot run {command!r}: {exc.strerror or exc}") from None
    proxy.settimeout(endpoint.connect_timeout)
    return proxy


def _via_jump_hosts(endpoint: Endpoint, jump: str, config: paramiko.SSHConfig, ask: Prompt | None, depth: int,
                    hops: list[SSHConnection]) -> Stream:
    """Connect through each jump host in turn; each hop is a Transport over the previous one's channel.

    The first hop is connected with its own ~/.ssh/config entry (which may
    itself use a proxy); later hops and the target are reached through
    `direct-tcpip` channels, as `ssh -J` does.
    """
    for spec in jump.split(","):
        user, host, port = parse_hop(spec)
        hop = resolve(config, host, user, port)
        try:
            hops.append(_connect(hop, config, ask, depth + 1, via=hops[-1] if hops else None))
        except HostError as exc:
            raise type(exc)(f"{endpoint.label}: via jump host {hop.alias}: {exc}", host=endpoint.alias,
                            step=exc.step) from None
    return _channel_to(hops[-1], endpoint)


def _channel_to(via: SSHConnection, endpoint: Endpoint) -> paramiko.Channel:
    try:
        return via.forward(endpoint.hostname, endpoint.port, endpoint.connect_timeout)
    except OSError as exc:
        raise endpoint.fail("connect", f"via {via.endpoint.alias}: {exc}") from None


# ---- key exchange ----

def _start_transport(endpoint: Endpoint, sock: Stream, known: KnownHosts) -> paramiko.Transport:
    stream: Any = sock  # paramiko takes any socket-like object; its stubs name only its own kinds
    transport = paramiko.Transport(stream)
    timeout = endpoint.connect_timeout
    transport.banner_timeout = timeout
    transport.handshake_timeout = max(timeout, MIN_HANDSHAKE_TIMEOUT)
    options = transport.get_security_options()
    options.key_types = known.preferred_key_types(options.key_types)
    options.ciphers = offered(options.ciphers, endpoint.option("ciphers"))
    if endpoint.flag("compression", False):
        transport.use_compression(True)
    started = time.monotonic()
    try:
        transport.start_client(timeout=transport.handshake_timeout)
        if not transport.initial_kex_done:  # start_client returns quietly when its timeout ran out
            raise TimeoutError
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise endpoint.fail("key exchange", _kex_failure(transport, exc, time.monotonic() - started)) from None
    return transport


def _kex_failure(transport: paramiko.Transport, exc: BaseException, waited: float) -> str:
    """What went wrong before the keys were exchanged, for a user who may have the wrong port or a dead link."""
    timeout = transport.banner_timeout
    if not transport.remote_version:  # never greeted (paramiko says "banner")
        if waited < timeout and not isinstance(exc, TimeoutError):
            return (f"the server closed the connection after {waited:.1f} s without an SSH greeting; is this an "
                    "SSH server (and is its port right)?")
        return f"no SSH greeting within {timeout:g} s; is this an SSH server (and is its port right)?"
    if isinstance(exc, TimeoutError) or waited >= transport.handshake_timeout:  # either of paramiko's timers
        return f"the server stopped answering (no key exchange within {transport.handshake_timeout:g} s)"
    return str(exc) or exc.__class__.__name__


__all__ = ["CHANNEL_ORIGIN", "MAX_PROXY_DEPTH", "MIN_HANDSHAKE_TIMEOUT", "PROBE_INTERVAL", "SSHConnection", "Stream",
           "connect"]
