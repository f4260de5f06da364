"""The broker's requests and replies: Host calls by name, answered with a value or the exception they raised.

A request is `(method, args)` over an authenticated `multiprocessing.connection`
(pickled: only a process that read our 0600 authkey can send one, i.e. the
same user). The methods are the `Host` interface's (hosts/base.py), which is
all the launcher and the commands use, the tunnel requests of broker/tunnels.py
(`tunnel_claim`, `tunnel_open`, `tunnel_keep`, `tunnel_drop`), plus the
socket-like channel `tcp_channel` returns, driven call by call (`channel_send`, `channel_recv`, `channel_close`)
so the handshake code runs unchanged through the broker.

Replies: ("ok", value); ("error", LauncherError.to_dict(), link_lost) where
`link_lost` tells the client to log in again and repeat the call; ("oserror",
class name, errno, text) for the OSErrors the Host interface raises on purpose
(e.g. a refused port).
"""

from __future__ import annotations

import builtins
import itertools
import logging
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ..errors import LauncherError
from .registry import STEP

if TYPE_CHECKING:
    from ..hosts.ssh import SSHHost
    from .tunnels import Tunnels

#: Host methods a client may call; those that use the shared SFTP session are called one at a time.
SFTP_CALLS = frozenset({"read", "read_state_file", "read_status_file", "mtime", "write_atomic", "create_exclusive",
                        "create_then_read", "rename", "remove", "listdir", "process_start_time", "read_from", "tail",
                        "home", "state_dir"})
OTHER_CALLS = frozenset({"run_script", "signal_group", "listens", "launch"})
PROPERTIES = frozenset({"home", "state_dir"})
CHANNEL_CALLS = frozenset({"tcp_channel", "channel_send", "channel_recv", "channel_close"})
OS_ERRORS = frozenset({"FileNotFoundError", "FileExistsError", "PermissionError", "ConnectionRefusedError",
                       "ConnectionResetError", "TimeoutError", "OSError", "EOFError"})
log = logging.getLogger("remote_http_launcher.broker")


class Usage(Protocol):
    """The broker as its sessions see it (server.Broker): its host (replaced after a reconnect), tunnels, use."""

    tunnels: Tunnels

    @property
    def host(self) -> SSHHost: ...

    @property
    def sftp_lock(self) -> Any: ...

    def used(self) -> None: ...

    def info(self) -> dict[str, Any]: ...


def serve_session(conn: Connection, broker: Usage) -> None:
    """Answer one client's requests until it hangs up; its channels close with it, and so do the tunnels
    it claimed but did not ask to keep (a run that failed or vanished)."""
    channels: dict[int, Any] = {}
    claimed: set[str] = set()
    numbers = itertools.count(1)
    try:
        while True:
            try:
                method, args = conn.recv()
            except (EOFError, OSError):
                return
            broker.used()
            host = broker.host
            try:
                if method.startswith("tunnel_"):
                    reply: tuple[Any, ...] = ("ok", _tunnel_call(broker.tunnels, claimed, method, args))
                else:
                    reply = ("ok", _call(host, broker, channels, numbers, method, args))
            except LauncherError as exc:
                reply = ("error", exc.to_dict(), not host.transport.is_active())
            except (OSError, EOFError) as exc:
                name = type(exc).__name__ if type(exc).__name__ in OS_ERRORS else "OSError"
                reply = ("oserror", name, getattr(exc, "errno", None), str(exc))
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return
    finally:
        for channel in channels.values():
            channel.close()
        for key in claimed:
            broker.tunnels.drop(key, "the run that opened it ended without it")


def _tunnel_call(tunnels: Tunnels, claimed: set[str], method: str, args: tuple[Any, ...]) -> Any:
    if method == "tunnel_claim":
        reused = tunnels.claim(*args)
        if reused is None:
            claimed.add(args[1])
        return reused
    if method == "tunnel_open":
        return tunnels.open(*args)
    if method == "tunnel_keep":
        tunnels.keep(*args)
        claimed.discard(args[0])
        return None
    if method == "tunnel_drop":
        claimed.discard(args[0])
        return tunnels.drop(args[0], "stopped")
    raise LauncherError(f"connection broker: unknown request {method!r}", step=STEP)


def _call(host: SSHHost, broker: Usage, channels: dict[int, Any], numbers: itertools.count[int], method: str,
          args: tuple[Any, ...]) -> Any:
    if method == "info":
        return broker.info()
    if method == "tcp_channel":
        number = next(numbers)
        channels[number] = host.tcp_channel(*args)
        return number
    if method == "channel_send":
        number, data, timeout = args
        channels[number].settimeout(timeout)
        channels[number].sendall(data)
        return None
    if method == "channel_recv":
        number, size, timeout = args
        channels[number].settimeout(timeout)
        return bytes(channels[number].recv(size))
    if method == "channel_close":
        channel = channels.pop(args[0], None)
        if channel is not None:
            channel.close()
        return None
    if method in PROPERTIES:
        with broker.sftp_lock:
            return getattr(host, method)
    if method in SFTP_CALLS:
        with broker.sftp_lock:
            return getattr(host, method)(*args)
    if method in OTHER_CALLS:
        return getattr(host, method)(*args)
    raise LauncherError(f"connection broker: unknown request {method!r}", step=STEP)


def raise_reply(reply: tuple[Any, ...]) -> NoReturn:
    """Raise what the broker's call raised (an "error" or "oserror" reply)."""
    if reply[0] == "error":
        raise LauncherError.from_dict(reply[1])
    _, name, number, text = reply
    kind = getattr(builtins, name) if name in OS_ERRORS else OSError
    if kind is EOFError:
        raise EOFError(text)
    raise kind(number, text) if number is not None else kind(text)
